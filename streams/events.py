"""The event contract (CONTRACT §3): raw Kafka record → validated events + rejects.

A record holds one event object or a batch `{"events": [...]}`. Every event is checked on
its own, so one bad event in a batch rejects only itself. Validated events are the
original dicts with two normalised keys added: `ts` as epoch milliseconds and
`entity`, the id of the device it came from, whatever the domain calls it.

Ranges reject what cannot physically be measured (negative volume, occupancy outside
[0, 1]); values that are possible but implausible (a speed of 250 km/h) pass, because
spotting a faulty sensor is the detectors' job, not the parser's.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import orjson

ENTITY_FIELD = {"gate": "gate_id", "traffic": "sensor_id", "grid": "feeder_id"}

MIN_TS_MS = 946_684_800_000  # 2000-01-01: older stamps are broken clocks, not history
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_ID_LEN = 128
DEFAULT_MAX_BATCH = 10_000

Event = dict[str, Any]


class Invalid(ValueError):
    """An event or record that breaks the contract; the message is the dead-letter reason."""


@dataclass(frozen=True)
class Reject:
    reason: str
    raw: bytes
    index: int | None = None  # position inside a batch record


# ---------------------------------------------------------------- field checks


def _number(ev: Event, name: str, lo: float, hi: float, required: bool = True) -> None:
    v = ev.get(name)
    if v is None:
        if required:
            raise Invalid(f"missing field: {name}")
        return
    if type(v) is bool or not isinstance(v, (int, float)):
        raise Invalid(f"wrong type: {name} must be a number, got {type(v).__name__}")
    # NaN fails both comparisons, so it is rejected here too.
    if not lo <= v <= hi:
        raise Invalid(f"out of range: {name}={v!r} not in [{lo:g}, {hi:g}]")


def _choice(ev: Event, name: str, allowed: frozenset[str], required: bool = True) -> None:
    v = ev.get(name)
    if v is None:
        if required:
            raise Invalid(f"missing field: {name}")
        return
    if not isinstance(v, str) or v not in allowed:
        raise Invalid(f"bad value: {name}={_short(v)} not one of {', '.join(sorted(allowed))}")


def _text(ev: Event, name: str) -> str:
    v = ev.get(name)
    if v is None:
        raise Invalid(f"missing field: {name}")
    if not isinstance(v, str):
        raise Invalid(f"wrong type: {name} must be a string, got {type(v).__name__}")
    if not 0 < len(v) <= MAX_ID_LEN:
        raise Invalid(f"out of range: {name} must be 1..{MAX_ID_LEN} characters")
    try:
        v.encode()
    except UnicodeEncodeError:  # a lone surrogate escape: JSON syntax allows it, UTF-8 doesn't
        raise Invalid(f"bad value: {name} is not valid Unicode text") from None
    return v


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


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
    ms = int(dt.timestamp() * 1000)
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise Invalid(f"bad timestamp: ts={_short(v)} outside 2000..2100")
    return ms


# ---------------------------------------------------------------- per-type schemas

_DIRECTIONS = frozenset({"in", "out"})
_METHODS = frozenset({"face", "qr", "card", "plate", "password"})
_RESULTS = frozenset({"granted", "denied"})
_BREAKER = frozenset({"closed", "open"})


def _gate_pass(ev: Event) -> None:
    _choice(ev, "direction", _DIRECTIONS)
    _choice(ev, "method", _METHODS)
    _choice(ev, "result", _RESULTS)
    _text(ev, "subject")
    _number(ev, "temperature_c", 25.0, 45.0, required=False)
    t = ev.get("tailgate")
    if t is not None and type(t) is not bool:
        raise Invalid(f"wrong type: tailgate must be true or false, got {type(t).__name__}")


def _gate_heartbeat(ev: Event) -> None:
    pass


def _traffic_flow(ev: Event) -> None:
    _number(ev, "interval_s", 1, 86_400)
    _number(ev, "volume", 0, 1e6)
    _number(ev, "speed_kmh", 0, 1_000)
    _number(ev, "occupancy", 0, 1)


def _grid_measurement(ev: Event) -> None:
    # Load may be negative: feeders with rooftop solar export power at noon.
    _number(ev, "load_kw", -1e6, 1e6)
    _number(ev, "voltage_kv", 0, 1_000)
    _number(ev, "frequency_hz", 0, 100)
    _choice(ev, "breaker", _BREAKER, required=False)
    _number(ev, "power_factor", -1, 1, required=False)


SCHEMAS: dict[str, dict[str, Callable[[Event], None]]] = {
    "gate": {"gate.pass": _gate_pass, "gate.heartbeat": _gate_heartbeat},
    "traffic": {"traffic.flow": _traffic_flow},
    "grid": {"grid.measurement": _grid_measurement},
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


def validate(domain: str, ev: Any) -> Event:
    """Check one event of `domain`; returns its contract fields with `ts` in epoch ms and
    `entity` set."""
    if not isinstance(ev, dict):
        raise Invalid(f"wrong type: event must be a JSON object, got {type(ev).__name__}")
    kind = ev.get("type")
    check = SCHEMAS[domain].get(kind) if isinstance(kind, str) else None
    if check is None:
        raise Invalid(f"bad value: type={_short(kind)} is not a {domain} event type "
                      f"({', '.join(SCHEMAS[domain])})")
    entity = _text(ev, ENTITY_FIELD[domain])
    ts = parse_ts(ev.get("ts"))
    check(ev)
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


def decode(domain: str, raw: bytes | None, max_batch: int = DEFAULT_MAX_BATCH
           ) -> tuple[list[Event], list[Reject]]:
    """One Kafka record value → (valid events, rejects). Never raises."""
    if raw is None:
        return [], [Reject("invalid json: empty record value", b"")]
    try:
        doc = loads(raw)
    except Invalid as exc:
        return [], [Reject(str(exc), raw)]
    batched = isinstance(doc, dict) and "events" in doc and "type" not in doc
    if batched:
        items = doc["events"]
        if not isinstance(items, list):
            return [], [Reject("wrong type: events must be a JSON array", raw)]
        if len(items) > max_batch:
            return [], [Reject(f"oversized batch: {len(items)} events > {max_batch}", raw)]
    else:
        items = [doc]
    good: list[Event] = []
    bad: list[Reject] = []
    for i, item in enumerate(items):
        try:
            good.append(validate(domain, item))
        except Invalid as exc:
            bad.append(Reject(str(exc), _dump(item) if batched else raw, i if batched else None))
    return good, bad


def _dump(item: Any) -> bytes:
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
