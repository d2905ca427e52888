"""Raw Kafka records → validated columns: a batch of events as one array per field.

The first stage of every step. Records are decoded with orjson one by one (a record is
one event or a batch `{"events": [...]}`), then the whole batch is judged at once: one
array per contract field, each field's spec (streams/events.py) checked with numpy over
the column, RFC 3339 timestamps parsed by digit arithmetic over the bytes of every
string of one length. Only the events that fail a vectorised check go through the
per-event validator, which words the reason; so every bad event is still dead-lettered
with its own reason and batch index, and nothing valid beside it is lost, while a clean
batch never runs Python per event beyond pulling its fields out of the dicts.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Iterable

import numpy as np

from streams import events as contract

_NUMERIC = (contract.Number,)


def _columns(domain: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The domain's numeric and categorical field names (besides type, ts and entity)."""
    numeric: dict[str, None] = {}
    other: dict[str, None] = {}
    for specs in contract.SCHEMAS[domain].values():
        for spec in specs:
            (numeric if isinstance(spec, _NUMERIC) else other)[spec.name] = None
    return tuple(numeric), ("type", *other)


COLUMNS = {d: _columns(d) for d in contract.SCHEMAS}


@dataclass
class EventColumns:
    """Validated events of one domain, in arrival order: numeric fields as floats (NaN
    where an optional field is absent), the others as object arrays (None where absent)."""

    domain: str
    entity: np.ndarray  # object: the device id, whatever the domain calls it
    ts: np.ndarray  # int64 epoch ms
    offset: np.ndarray  # int64: the record each event came in
    numbers: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    @classmethod
    def empty(cls, domain: str) -> "EventColumns":
        numeric, other = COLUMNS[domain]
        return cls(domain, np.empty(0, object), np.empty(0, np.int64), np.empty(0, np.int64),
                   {f: np.empty(0) for f in numeric}, {f: np.empty(0, object) for f in other})

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> "EventColumns":
        return EventColumns(self.domain, self.entity[idx], self.ts[idx], self.offset[idx],
                            {f: v[idx] for f, v in self.numbers.items()},
                            {f: v[idx] for f, v in self.labels.items()})

    def number(self, name: str) -> np.ndarray:
        return self.numbers[name]

    def equals(self, name: str, value: Any) -> np.ndarray:
        return np.asarray(self.labels[name] == value, dtype=bool)

    def event(self, i: int) -> contract.Event:
        """Event i as the per-event validator returns it (for its dead letter)."""
        kind = self.labels["type"][i]
        out: contract.Event = {}
        for name in contract.FIELDS[kind]:
            if name == "ts":
                out["ts"] = int(self.ts[i])
            elif name == contract.ENTITY_FIELD[self.domain]:
                out[name] = self.entity[i]
            elif name in self.numbers:
                x = float(self.numbers[name][i])
                if x == x:
                    out[name] = int(x) if x.is_integer() and abs(x) < 2**53 else x
            elif self.labels[name][i] is not None:
                out[name] = self.labels[name][i]
        out["entity"] = self.entity[i]
        return out


@dataclass(frozen=True)
class Rejected:
    offset: int
    key: bytes | None
    reject: contract.Reject


def decode_record(domain: str, raw: bytes | None, max_batch: int = contract.DEFAULT_MAX_BATCH
                  ) -> tuple[list[contract.Event], list[contract.Reject]]:
    """One record value, judged as the worker judges it (but for the clock): its valid
    events, as the per-event validator returns them, and its rejects."""
    cols, rejected = decode(domain, [(0, None, raw)], None, max_batch=max_batch)
    return [cols.event(i) for i in range(len(cols))], [r.reject for r in rejected]


def decode(domain: str, records: Iterable[tuple[int, bytes | None, bytes | None]], now_ms: int | None,
           max_ahead_ms: int = contract.DEFAULT_MAX_AHEAD_MS,
           max_batch: int = contract.DEFAULT_MAX_BATCH) -> tuple[EventColumns, list[Rejected]]:
    """(offset, key, value) records → the valid events as columns, and every reject.
    Events stamped more than `max_ahead_ms` after `now_ms` are rejected (None: no clock)."""
    items: list[Any] = []
    # One entry per record that holds items, not per item: where its first item is, and
    # what a dead letter of one of its items needs (the raw bytes of a single-event record).
    firsts: list[int] = []
    sources: list[tuple[int, bytes | None, bytes | None]] = []  # offset, key, raw (None: a batch)
    rejected: list[Rejected] = []
    for offset, key, raw in records:
        if raw is None:
            rejected.append(Rejected(offset, key, contract.Reject("invalid json: empty record value", b"")))
            continue
        try:
            doc = contract.loads(raw)
        except contract.Invalid as exc:
            rejected.append(Rejected(offset, key, contract.Reject(str(exc), raw)))
            continue
        if isinstance(doc, dict) and "events" in doc and "type" not in doc:
            batch = doc["events"]
            if not isinstance(batch, list):
                rejected.append(Rejected(offset, key, contract.Reject("wrong type: events must be a JSON array", raw)))
            elif len(batch) > max_batch:
                rejected.append(Rejected(offset, key, contract.Reject(
                    f"oversized batch: {len(batch)} events > {max_batch}", raw)))
            elif batch:
                firsts.append(len(items))
                sources.append((offset, key, None))
                items += batch
        else:
            firsts.append(len(items))
            sources.append((offset, key, raw))
            items.append(doc)
    if not items:
        return EventColumns.empty(domain), rejected

    cols, ok = _judge(domain, items, now_ms, max_ahead_ms)
    for i in np.flatnonzero(~ok).tolist():
        record = bisect_right(firsts, i) - 1
        offset, key, raw = sources[record]
        try:
            ev = contract.validate(domain, items[i], now_ms, max_ahead_ms)
        except contract.Invalid as exc:
            rejected.append(Rejected(offset, key, contract.Reject(
                str(exc), raw if raw is not None else contract.dump_item(items[i]),
                None if raw is not None else i - firsts[record])))
            continue
        cols.set_row(i, ev)  # valid after all: the vectorised checks may only be stricter
        ok[i] = True
    rejected.sort(key=lambda r: r.offset)
    offsets = np.repeat(np.array([s[0] for s in sources], np.int64), np.diff(firsts, append=len(items)))
    return cols.build(offsets, ok), rejected


class _Draft:
    """Columns of every item, before the rows that failed are dropped."""

    def __init__(self, domain: str, items: list[Any], objects: np.ndarray) -> None:
        """`objects`: which items are JSON objects (the others read as empty ones)."""
        self.domain = domain
        numeric, other = COLUMNS[domain]
        dicts = items if objects.all() else [it if type(it) is dict else {} for it in items]
        self.raw = {f: contract.Column(list(map(dict.get, dicts, repeat(f))))
                    for f in (contract.ENTITY_FIELD[domain], "ts", *numeric, *other)}
        self.entity = _objects(self.raw[contract.ENTITY_FIELD[domain]].values)
        self.ts = np.zeros(len(items), np.int64)
        self.numbers = {f: np.full(len(items), np.nan) for f in numeric}
        self.labels = {f: _objects(self.raw[f].values) for f in other}

    def set_row(self, i: int, ev: contract.Event) -> None:
        self.entity[i] = ev["entity"]
        self.ts[i] = ev["ts"]
        for f, col in self.numbers.items():
            col[i] = ev.get(f, np.nan)
        for f, col in self.labels.items():
            col[i] = ev.get(f)

    def build(self, offsets: np.ndarray, ok: np.ndarray) -> EventColumns:
        if ok.all():
            return EventColumns(self.domain, self.entity, self.ts, offsets, self.numbers, self.labels)
        idx = np.flatnonzero(ok)
        return EventColumns(self.domain, self.entity[idx], self.ts[idx], offsets[idx],
                            {f: v[idx] for f, v in self.numbers.items()},
                            {f: v[idx] for f, v in self.labels.items()})


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-d object array of the values, even where a value is itself a list."""
    return np.fromiter(values, dtype=object, count=len(values))


def _judge(domain: str, items: list[Any], now_ms: int | None, max_ahead_ms: int) -> tuple[_Draft, np.ndarray]:
    """Every item's columns, and which items pass every check (False: ask the validator)."""
    n = len(items)
    ok = np.fromiter(map(dict.__instancecheck__, items), bool, n)
    draft = _Draft(domain, items, ok)
    ok &= contract.Text("entity").passes(draft.raw[contract.ENTITY_FIELD[domain]])
    ts, good_ts = _timestamps(draft.raw["ts"])
    draft.ts = ts
    ok &= good_ts if now_ms is None else good_ts & (ts <= now_ms + max_ahead_ms)
    try:  # the batch's event types; equal to a type's name means of that type
        kinds: set[Any] | None = set(draft.raw["type"].values)
    except TypeError:  # an unhashable value: compare value by value below
        kinds = None
    known = np.zeros(n, bool)
    for kind, specs in contract.SCHEMAS[domain].items():
        if kinds is not None and kind not in kinds:
            continue
        whole = kinds == {kind}  # the usual batch: every event of one type
        of_kind = np.ones(n, bool) if whole else np.asarray(draft.labels["type"] == kind, dtype=bool)
        known |= of_kind
        rows = np.flatnonzero(of_kind)
        if len(rows) == 0:
            continue
        picked = rows.tolist()
        for spec in specs:
            col = draft.raw[spec.name] if whole else draft.raw[spec.name].take(picked)
            ok[rows] &= spec.passes(col)
            if isinstance(spec, _NUMERIC):
                draft.numbers[spec.name][rows] = col.floats()
        # a validated event keeps only its type's fields: others read as absent
        for f in set(draft.labels) - set(contract.FIELDS[kind]):
            draft.labels[f][rows] = None
    return draft, ok & known


# ---------------------------------------------------------------- timestamps

# RFC 3339 forms parsed here, by length: 'Z' or '±hh:mm', with 0, 3 or 6 fraction digits.
# Anything else (another separator, other fraction lengths) goes to the per-event parser.
_FORMS = {20: (0, True), 24: (3, True), 27: (6, True), 25: (0, False), 29: (3, False), 32: (6, False)}
_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _timestamps(col: contract.Column) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ms of each `ts` (integer ms or RFC 3339), and whether it was understood
    and inside 2000..2100."""
    n = len(col)
    ms = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    kinds = col.kinds()
    numeric = np.flatnonzero((kinds == contract.INT) | (kinds == contract.FLOAT))
    if len(numeric):
        x = (col if len(numeric) == n else col.take(numeric.tolist())).floats()
        inside = (x >= contract.MIN_TS_MS) & (x < contract.MAX_TS_MS)
        ms[numeric[inside]] = x[inside].astype(np.int64)
        ok[numeric[inside]] = True
    text = np.flatnonzero(kinds == contract.STR)
    if len(text):
        got, good = _rfc3339(col.values if len(text) == n else col.take(text.tolist()).values)
        ms[text] = got
        ok[text] = good & (got >= contract.MIN_TS_MS) & (got < contract.MAX_TS_MS)
    return ms, ok


def _rfc3339(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = len(texts)
    ms = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    lengths = np.fromiter(map(len, texts), np.int64, n)
    for length in np.unique(lengths).tolist():
        if length not in _FORMS:
            continue
        idx = np.flatnonzero(lengths == length)
        try:
            raw = "".join([texts[i] for i in idx.tolist()]).encode("ascii")
        except UnicodeEncodeError:
            continue
        got, good = _parse_fixed(np.frombuffer(raw, np.uint8).reshape(len(idx), length), *_FORMS[length])
        ms[idx], ok[idx] = got, good
    return ms, ok


def _parse_fixed(b: np.ndarray, frac: int, zulu: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 'YYYY-MM-DDTHH:MM:SS[.f…](Z|±hh:mm)' of one length → epoch ms, valid."""
    d = b.astype(np.int64) - 48

    def num(*pos: int) -> np.ndarray:
        out = np.zeros(len(b), np.int64)
        for p in pos:
            out = out * 10 + d[:, p]
        return out

    width = b.shape[1]
    digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, *range(20, 20 + frac)]
    marks = {4: b"-", 7: b"-", 10: b"T", 13: b":", 16: b":"}
    if frac:
        marks[19] = b"."
    if zulu:
        marks[width - 1] = b"Z"
        sign = np.zeros(len(b), np.int64)
    else:
        marks[width - 3] = b":"
        digits += [width - 5, width - 4, width - 2, width - 1]
        sign = np.where(b[:, width - 6] == ord("+"), 1, np.where(b[:, width - 6] == ord("-"), -1, 0))
    ok = np.all((d[:, digits] >= 0) & (d[:, digits] <= 9), axis=1)
    for p, ch in marks.items():
        ok &= b[:, p] == ch[0]
    if not zulu:
        ok &= sign != 0
    year, month, day = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    hour, minute, second = num(11, 12), num(14, 15), num(17, 18)
    month_ok = (month >= 1) & (month <= 12)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    last = _DAYS[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)
    ok &= month_ok & (day >= 1) & (day <= last) & (hour <= 23) & (minute <= 59) & (second <= 59)
    offset = np.zeros(len(b), np.int64)
    if not zulu:
        oh, om = num(width - 5, width - 4), num(width - 2, width - 1)
        ok &= (oh <= 23) & (om <= 59)
        offset = sign * (oh * 3600 + om * 60)
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
    millis = num(*range(20, 23)) if frac else 0
    return seconds * 1000 + millis, ok

