"""The event contract (CONTRACT §3): raw Kafka record → validated events + rejects.

A record holds one event object or a batch `{"events": [...]}`. Every event is checked on
its own, so one bad event in a batch rejects only itself. Validated events are the
original dicts with two normalised keys added: `ts` as epoch milliseconds and
`entity`, the id of the device it came from, whatever the domain calls it.

Ranges reject what cannot physically be measured (negative volume, occupancy outside
[0, 1]); values that are possible but implausible (a speed of 250 km/h) pass, because
spotting a faulty sensor is the detectors' job, not the parser's. Time is the exception:
an event stamped further ahead of the receiving process's clock than the allowed skew is
rejected as `future`, because stream time only moves forward and one such event would
close every open window of its partition (a gateway whose clock jumped to 2099 would make
every real event after it late).

This module judges one event at a time and words every reason; streams/columns.py judges
whole batches with numpy and comes here only for the events it cannot pass.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections import defaultdict
from typing import Any

import numpy as np
import orjson

ENTITY_FIELD = {"gate": "gate_id", "traffic": "sensor_id", "grid": "feeder_id"}

MIN_TS_MS = 946_684_800_000  # 2000-01-01: older stamps are broken clocks, not history
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_ID_LEN = 128
DEFAULT_MAX_BATCH = 10_000
DEFAULT_MAX_AHEAD_MS = 60_000  # how far an event may be stamped ahead of the clock

Event = dict[str, Any]


class Invalid(ValueError):
    """An event or record that breaks the contract; the message is the dead-letter reason."""


@dataclass(frozen=True)
class Reject:
    reason: str
    raw: bytes
    index: int | None = None  # position inside a batch record


# ---------------------------------------------------------------- field checks
# Each field of an event type is one spec; `check` judges one event and words the reason,
# `passes` judges a whole column at once (streams/columns.py) and must never pass a value
# that `check` would reject: it may only be stricter.


def _given(ev: Event, name: str, required: bool) -> Any:
    """The field's value; None where an optional field is absent."""
    v = ev.get(name)
    if v is None and required:
        raise Invalid(f"missing field: {name}")
    return v


OTHER, NONE, BOOL, INT, FLOAT, STR = range(6)
KIND = defaultdict(int, {type(None): NONE, bool: BOOL, int: INT, float: FLOAT, str: STR})
_NUMBERS_OR_NONE = frozenset({int, float, type(None)})


class Column:
    """One field's values over a batch, and what the checks ask of them, each worked out
    once. The common batch holds one or two Python types per field; its checks then run
    as a C-level pass or two over the list, and only a batch of mixed or odd types pays
    for the value-by-value kinds."""

    def __init__(self, values: list[Any]) -> None:
        self.values = values
        self._types: frozenset[type] | None = None
        self._kinds: np.ndarray | None = None
        self._floats: np.ndarray | None = None

    @property
    def types(self) -> frozenset[type]:
        if self._types is None:
            self._types = frozenset(map(type, self.values))
        return self._types

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: list[int]) -> "Column":
        return Column(list(map(self.values.__getitem__, rows)))

    def kinds(self) -> np.ndarray:
        """Each value's JSON kind (NONE, BOOL, INT, FLOAT, STR or OTHER)."""
        if self._kinds is None:
            if len(self.types) == 1:  # one type: no need to look at each value
                self._kinds = np.full(len(self.values), KIND[next(iter(self.types))], np.int8)
            else:
                self._kinds = np.fromiter(map(KIND.__getitem__, map(type, self.values)), np.int8, len(self.values))
        return self._kinds

    def of_type(self, t: type) -> np.ndarray:
        """Where the value's type is exactly `t`."""
        if t not in self.types:
            return np.zeros(len(self.values), bool)
        if len(self.types) == 1:
            return np.ones(len(self.values), bool)
        return self.kinds() == KIND[t]

    def floats(self) -> np.ndarray:
        """The values as floats, NaN where not a number (or an integer beyond a float)."""
        if self._floats is None:
            if self.types <= _NUMBERS_OR_NONE:
                try:  # None (an optional field absent) becomes NaN
                    self._floats = np.array(self.values, dtype=float)
                except OverflowError:
                    pass
            if self._floats is None:
                kind = self.kinds()
                numeric = ((kind == INT) | (kind == FLOAT)).tolist()
                self._floats = np.array([float(v) if ok and abs(v) < 1e300 else np.nan
                                         for v, ok in zip(self.values, numeric)], dtype=float)
        return self._floats


@dataclass(frozen=True)
class Number:
    name: str
    lo: float
    hi: float
    required: bool = True

    def check(self, ev: Event) -> None:
        v = _given(ev, self.name, self.required)
        if v is None:
            return
        if type(v) is bool or not isinstance(v, (int, float)):
            raise Invalid(f"wrong type: {self.name} must be a number, got {type(v).__name__}")
        # NaN fails both comparisons, so it is rejected here too.
        if not self.lo <= v <= self.hi:
            raise Invalid(f"out of range: {self.name}={v!r} not in [{self.lo:g}, {self.hi:g}]")

    def passes(self, col: Column) -> np.ndarray:
        x = col.floats()  # NaN (failing both bounds) where not a number
        inside = (x >= self.lo) & (x <= self.hi)
        return inside if self.required else inside | col.of_type(type(None))


@dataclass(frozen=True)
class Choice:
    name: str
    allowed: frozenset[str]
    required: bool = True

    def check(self, ev: Event) -> None:
        v = _given(ev, self.name, self.required)
        if v is None:
            return
        if not isinstance(v, str) or v not in self.allowed:
            raise Invalid(f"bad value: {self.name}={_short(v)} not one of {', '.join(sorted(self.allowed))}")

    def passes(self, col: Column) -> np.ndarray:
        n = len(col)
        try:  # allowed holds strings only, so no other hashable value is a member
            member = np.fromiter(map(self.allowed.__contains__, col.values), bool, n)
        except TypeError:  # an unhashable value (a list, an object) somewhere
            text = col.of_type(str).tolist()
            member = np.fromiter((v in self.allowed if t else False for v, t in zip(col.values, text)), bool, n)
        return member if self.required else member | col.of_type(type(None))


@dataclass(frozen=True)
class Text:
    name: str

    def check(self, ev: Event) -> str:
        v = _given(ev, self.name, True)
        if not isinstance(v, str):
            raise Invalid(f"wrong type: {self.name} must be a string, got {type(v).__name__}")
        if not 0 < len(v) <= MAX_ID_LEN:
            raise Invalid(f"out of range: {self.name} must be 1..{MAX_ID_LEN} characters")
        try:
            v.encode()
        except UnicodeEncodeError:  # a lone surrogate escape: JSON syntax allows it, UTF-8 doesn't
            raise Invalid(f"bad value: {self.name} is not valid Unicode text") from None
        return v

    def passes(self, col: Column) -> np.ndarray:
        values = col.values
        try:  # join takes strings only: one C-level pass checks every type
            "".join(values).encode()
        except (TypeError, UnicodeEncodeError):
            return np.zeros(len(values), bool)  # rare: let the per-event check word it
        lengths = np.fromiter(map(len, values), np.int64, len(values))
        return (lengths > 0) & (lengths <= MAX_ID_LEN)


@dataclass(frozen=True)
class Flag:
    name: str

    def check(self, ev: Event) -> None:
        t = ev.get(self.name)
        if t is not None and type(t) is not bool:
            raise Invalid(f"wrong type: {self.name} must be true or false, got {type(t).__name__}")

    def passes(self, col: Column) -> np.ndarray:
        if col.types <= {type(None), bool}:
            return np.ones(len(col), bool)
        return col.of_type(type(None)) | col.of_type(bool)


Spec = Number | Choice | Text | Flag


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def parse_ts(v: Any) -> int:
    """Event time as epoch ms, from an RFC 3339 string or integer epoch milliseconds."""
    if v is None:
        raise Invalid("missing field: ts")
    if type(v) is bool:
        raise Invalid("bad timestamp: ts must be RFC 3339 or epoch milliseconds, got bool")
    if isinstance(v, (int, float)):
        if not MIN_TS_MS <= v < MAX_TS_MS:
            raise Invalid(f"bad timestamp: ts={_short(v)} outside 2000..2100 in epoch ms")
        return int(v)
    if not isinstance(v, str):
        raise Invalid(f"bad timestamp: ts must be RFC 3339 or epoch milliseconds, got {type(v).__name__}")
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise Invalid(f"bad timestamp: ts={_short(v)} is not RFC 3339") from None
    if dt.tzinfo is None:
        raise Invalid(f"bad timestamp: ts={_short(v)} has no UTC offset")
    # Whole milliseconds by integer arithmetic (via a float, .123 s could come out as 122 ms)
    ms = (dt - _EPOCH) // _MS
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise Invalid(f"bad timestamp: ts={_short(v)} outside 2000..2100")
    return ms


# ---------------------------------------------------------------- per-type schemas

_DIRECTIONS = frozenset({"in", "out"})
_METHODS = frozenset({"face", "qr", "card", "plate", "password"})
_RESULTS = frozenset({"granted", "denied"})
_BREAKER = frozenset({"closed", "open"})

# Each event type's fields beyond type, ts and its entity id.
SCHEMAS: dict[str, dict[str, tuple[Spec, ...]]] = {
    "gate": {
        "gate.pass": (Choice("direction", _DIRECTIONS), Choice("method", _METHODS), Choice("result", _RESULTS),
                      Text("subject"), Number("temperature_c", 25.0, 45.0, required=False), Flag("tailgate")),
        "gate.heartbeat": (),
    },
    "traffic": {
        "traffic.flow": (Number("interval_s", 1, 86_400), Number("volume", 0, 1e6),
                         Number("speed_kmh", 0, 1_000), Number("occupancy", 0, 1)),
    },
    "grid": {
        # Load may be negative: feeders with rooftop solar export power at noon.
        "grid.measurement": (Number("load_kw", -1e6, 1e6), Number("voltage_kv", 0, 1_000),
                             Number("frequency_hz", 0, 100), Choice("breaker", _BREAKER, required=False),
                             Number("power_factor", -1, 1, required=False)),
    },
}

# The contract's fields of each event type; validated events keep these and no others,
# so whatever else a producer attached can't break a re-encoding further down the stream.
FIELDS: dict[str, tuple[str, ...]] = {
    "gate.pass": ("type", "ts", "gate_id", "direction", "method", "result", "subject",
                  "temperature_c", "tailgate"),
    "gate.heartbeat": ("type", "ts", "gate_id"),
    "traffic.flow": ("type", "ts", "sensor_id", "interval_s", "volume", "speed_kmh", "occupancy"),
    "grid.measurement": ("type", "ts", "feeder_id", "load_kw", "voltage_kv", "frequency_hz",
                         "breaker", "power_factor"),
}


def future(ts: int, now_ms: int, max_ahead_ms: int) -> str | None:
    """The reason an event stamped `ts` is too far ahead of the clock, or None."""
    if ts <= now_ms + max_ahead_ms:
        return None
    return (f"future: ts {_iso(ts)} is {(ts - now_ms) / 1000:.0f}s ahead of the receiving clock "
            f"(allowed skew {max_ahead_ms // 1000}s)")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


def validate(domain: str, ev: Any, now_ms: int | None = None, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> Event:
    """Check one event of `domain`; returns its contract fields with `ts` in epoch ms and
    `entity` set. With `now_ms`, an event stamped more than `max_ahead_ms` after it is
    rejected as from the future."""
    if not isinstance(ev, dict):
        raise Invalid(f"wrong type: event must be a JSON object, got {type(ev).__name__}")
    kind = ev.get("type")
    specs = SCHEMAS[domain].get(kind) if isinstance(kind, str) else None
    if specs is None:
        raise Invalid(f"bad value: type={_short(kind)} is not a {domain} event type "
                      f"({', '.join(SCHEMAS[domain])})")
    entity = Text(ENTITY_FIELD[domain]).check(ev)
    ts = parse_ts(ev.get("ts"))
    if now_ms is not None and (reason := future(ts, now_ms, max_ahead_ms)):
        raise Invalid(reason)
    for spec in specs:
        spec.check(ev)
    out = {k: ev[k] for k in FIELDS[kind] if ev.get(k) is not None}
    out["ts"] = ts
    out["entity"] = entity
    return out


# ---------------------------------------------------------------- records


def loads(raw: bytes) -> Any:
    """orjson first; the stdlib only for what orjson refuses but is still JSON-ish
    (integers beyond 64 bits, NaN), so such a value becomes a range reject of one
    event rather than a parse failure of its whole batch."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise Invalid(f"invalid json: {exc}") from None


def dump_item(item: Any) -> bytes:
    """One item of a batch record as bytes for its dead letter, whatever it holds."""
    try:
        return orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError):
        return repr(item).encode()


def deadletter(reject: Reject, topic: str, partition: int | None, offset: int | None) -> bytes:
    """The dead-letter value of contract §2; `raw` is text when the bytes are UTF-8."""
    try:
        raw: str = reject.raw.decode()
        encoding = "utf-8"
    except UnicodeDecodeError:
        raw, encoding = base64.b64encode(reject.raw).decode(), "base64"
    doc = {"reason": reject.reason, "topic": topic, "partition": partition,
           "offset": offset, "raw": raw}
    if encoding != "utf-8":
        doc["raw_encoding"] = encoding
    if reject.index is not None:
        doc["index"] = reject.index
    return orjson.dumps(doc)
