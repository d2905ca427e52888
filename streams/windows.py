"""Event-time window aggregates, as numpy columns: one `Block` holds one window of many
entities (or areas), one slot each, and folds a batch of events with vectorised group-by.

Per slot a block keeps, for each numeric field, count, sum, m2 = Σ(x − mean)², min and
max; per counter the events matching it; per product Σ a·b; and the latest categorical
state by event time. All of it is a monoid: folding events in any split, or merging two
blocks' rows (Chan et al.'s parallel update for m2), gives the figures of all the events
together (up to float rounding in sums, never in counts: a sum is kept as a sum).

Outside the worker a window travels as columns, one list per statistic and a row per
entity or area (`Block.columns`, the wire form of the aggregates and rollups topics):
    {"n": events, "f": {field: {"count", "sum", "m2", "min", "max"}},
     "c": {counter: matching events}, "p": {product: Σ a·b}, "s": {"ts", "value"}}
The short keys are the topics' format, which readers already parse; only `unpack` and
`field_columns` read them here. `unpack` hands out each row as an `Agg`, which the API
merges across partitions and turns into operator figures:
    Agg(events, fields={field: FieldStats(count, sum, m2, min, max)},
        counters={counter: int}, products={product: float}, latest=Latest(ts, value) | None)
The names are the `Shape`'s own (fields, counters, products), so a newcomer reads an
aggregate without a legend. All three are NamedTuples: immutable, so a share held in
memory never changes under a reader (a merge makes a new one); smaller than the dicts
and lists they replace (the API holds one per field of every open window share); and the
cheapest immutable record to make (0.15 µs, a frozen dataclass 0.4 µs: the API makes
one per row it reads and per merge). The window history stores them in the old short
form still (api/window_history.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

NO_STATE = -1


@dataclass(frozen=True)
class Shape:
    """What a domain's windows hold."""

    fields: tuple[str, ...]
    counters: tuple[tuple[str, str, Any], ...] = ()  # name, field, the value it counts
    products: tuple[tuple[str, str, str], ...] = ()
    state: str | None = None
    # The state field's values, ordered so that a tie on event time picks the later one
    # here (the larger string), whatever the arrival order.
    states: tuple[str, ...] = ()


SHAPES: dict[str, Shape] = {
    "gate": Shape(
        fields=("temperature_c",),
        counters=(("passes", "type", "gate.pass"), ("in", "direction", "in"), ("out", "direction", "out"),
                  ("denied", "result", "denied"), ("tailgates", "tailgate", True),
                  ("heartbeats", "type", "gate.heartbeat")),
    ),
    "traffic": Shape(
        fields=("volume", "speed_kmh", "occupancy"),
        products=(("speed_x_volume", "speed_kmh", "volume"),),
    ),
    "grid": Shape(
        fields=("load_kw", "voltage_kv", "frequency_hz", "power_factor"),
        counters=(("breaker_open", "breaker", "open"),),
        state="breaker", states=("closed", "open"),
    ),
}


def window_start(ts: Any, window_ms: int) -> Any:
    return ts - ts % window_ms


def stream_times(ts: np.ndarray, stream_time: int | None) -> np.ndarray:
    """The partition's stream time (the largest event time seen so far) just before each
    event, and last, after the batch. Judging each event against the stream time before
    it, not against the batch's end, is what makes every decision independent of how
    records were cut into batches."""
    start = np.iinfo(np.int64).min if stream_time is None else stream_time
    return np.maximum.accumulate(np.concatenate(([start], ts)))


def late_mask(ts: np.ndarray, window_ms: int, lateness_ms: int, before: np.ndarray) -> np.ndarray:
    """Which events arrive after their window closed, given the stream time before each
    (`stream_times(...)[:-1]`): a window [s, s + W) closes once stream time reaches
    s + W + lateness."""
    return window_start(ts, window_ms) + window_ms + lateness_ms <= before


# ---------------------------------------------------------------- the columnar block


# Events counted in one slot's window: 32 bits hold 2.1 billion (35 million a second for
# a minute in one device or area share) and halve the counts' memory (benchmarks/README.md,
# Scale). A block whose counts would pass that (a day-long window of a busy area share)
# widens them to 64 bits first.
COUNT = np.int32
COUNT_MAX = int(np.iinfo(COUNT).max)


class Block:
    """One window's figures for `capacity` slots; a slot with n == 0 holds nothing."""

    ARRAYS = ("n", "count", "total", "m2", "lo", "hi", "counters", "products", "state")

    def __init__(self, shape: Shape, capacity: int = 64) -> None:
        self.shape = shape
        f, c, p = len(shape.fields), len(shape.counters), len(shape.products)
        self.n = np.zeros(capacity, COUNT)
        self.count = np.zeros((f, capacity), COUNT)
        self.total = np.zeros((f, capacity))
        self.m2 = np.zeros((f, capacity))
        self.lo = np.full((f, capacity), np.inf)
        self.hi = np.full((f, capacity), -np.inf)
        self.counters = np.zeros((c, capacity), COUNT)
        self.products = np.zeros((p, capacity))
        # latest state as one sortable number: ts · (values + 1) + code + 1, NO_STATE if none;
        # empty for a shape without a state field (gates and roads)
        self.state = np.full(capacity if shape.state else 0, NO_STATE, np.int64)

    @property
    def capacity(self) -> int:
        return len(self.n)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS}

    @classmethod
    def from_arrays(cls, shape: Shape, arrays: dict[str, np.ndarray]) -> "Block":
        """A block of stored arrays, as this version keeps them: snapshots written before
        the counts were 32-bit, or with a state column for every shape, are read too."""
        block = cls.__new__(cls)
        block.shape = shape
        for name in cls.ARRAYS:
            setattr(block, name, arrays[name])
        if not (block.n.size and int(block.n.max()) > COUNT_MAX):  # n bounds every count
            for name in ("n", "count", "counters"):
                setattr(block, name, getattr(block, name).astype(COUNT, copy=False))
        if not shape.state:
            block.state = np.empty(0, np.int64)
        return block

    def reserve(self, slots: int) -> None:
        if slots <= self.capacity:
            return
        # a quarter more at a time: amortised growth, and at most a quarter of the heap idle
        grown = Block(self.shape, max(slots, self.capacity + self.capacity // 4))
        for name, old in self.arrays().items():
            new = getattr(grown, name).astype(old.dtype, copy=False)  # counts stay as wide as they are
            new[..., :old.shape[-1]] = old
            setattr(self, name, new)

    def _widen_for(self, touched: np.ndarray, events: int) -> None:
        """Counts to 64 bits before `events` more could take a slot past COUNT_MAX."""
        if self.n.dtype != np.int64 and int(self.n[touched].max()) + events > COUNT_MAX:
            self.n, self.count, self.counters = (a.astype(np.int64) for a in (self.n, self.count, self.counters))

    def fold(self, slots: np.ndarray, batch: "Columns") -> np.ndarray:
        """Add the events (their slots, and their values in `batch`) into the block;
        the distinct slots touched."""
        touched, group = np.unique(slots, return_inverse=True)
        self.reserve(int(touched[-1]) + 1)
        self._widen_for(touched, len(slots))
        g = len(touched)
        self.n[touched] += np.bincount(group, minlength=g)
        for i, x in enumerate(batch.fields):
            have = ~np.isnan(x)
            nb = np.bincount(group, weights=have, minlength=g)
            sb = np.bincount(group, weights=np.where(have, x, 0.0), minlength=g)
            mb = np.divide(sb, nb, out=np.zeros(g), where=nb > 0)
            dev = np.where(have, x - mb[group], 0.0)
            m2b = np.bincount(group, weights=dev * dev, minlength=g)
            lo = np.full(g, np.inf)
            hi = np.full(g, -np.inf)
            np.fmin.at(lo, group, x)
            np.fmax.at(hi, group, x)
            na = self.count[i, touched].astype(float)
            ma = np.divide(self.total[i, touched], na, out=np.zeros(g), where=na > 0)
            n = na + nb
            delta = mb - ma
            both = (na > 0) & (nb > 0)
            self.m2[i, touched] += m2b + np.where(both, delta * delta * na * nb / np.where(both, n, 1), 0.0)
            self.count[i, touched] += nb.astype(np.int64)
            self.total[i, touched] += sb
            self.lo[i, touched] = np.fmin(self.lo[i, touched], lo)
            self.hi[i, touched] = np.fmax(self.hi[i, touched], hi)
        for i, hit in enumerate(batch.counters):
            self.counters[i, touched] += np.bincount(group, weights=hit, minlength=g).astype(np.int64)
        for i, x in enumerate(batch.products):
            self.products[i, touched] += np.bincount(group, weights=x, minlength=g)
        if batch.state is not None:
            latest = np.full(g, NO_STATE, np.int64)
            np.maximum.at(latest, group, batch.state)
            self.state[touched] = np.maximum(self.state[touched], latest)
        return touched

    def present(self) -> np.ndarray:
        return np.flatnonzero(self.n > 0)

    def columns(self, slots: np.ndarray) -> dict[str, Any]:
        """The rows of `slots` as JSON-ready columns (numpy arrays; orjson writes them
        with OPT_SERIALIZE_NUMPY): the wire form of window records."""
        shape = self.shape
        fields = {}
        for i, name in enumerate(shape.fields):
            count = self.count[i, slots]
            have = count > 0
            fields[name] = {"count": count, "sum": self.total[i, slots], "m2": self.m2[i, slots],
                            # NaN is written as null: no reading, no extreme
                            "min": np.where(have, self.lo[i, slots], np.nan),
                            "max": np.where(have, self.hi[i, slots], np.nan)}
        out: dict[str, Any] = {"n": self.n[slots], "f": fields,
                               "c": {name: self.counters[i, slots] for i, (name, _, _) in enumerate(shape.counters)},
                               "p": {name: self.products[i, slots] for i, (name, _, _) in enumerate(shape.products)}}
        if shape.state:
            state = self.state[slots]
            size = len(shape.states) + 1
            have = state != NO_STATE
            out["s"] = {"ts": np.where(have, state // size, 0),
                        "value": [shape.states[v % size - 1] if ok else None
                                  for v, ok in zip(state.tolist(), have.tolist())]}
        return out


@dataclass(frozen=True)
class Columns:
    """A batch's events as one array per statistic of a shape, extracted once and then
    folded any number of ways (entity windows, then each area level)."""

    fields: list[np.ndarray]  # NaN where an event lacks the field
    counters: list[np.ndarray]  # bool
    products: list[np.ndarray]  # 0 where either factor is absent
    state: np.ndarray | None  # sortable state number per event, NO_STATE where absent

    @classmethod
    def of(cls, shape: Shape, events: Any) -> "Columns":
        """From validated event columns (streams.columns.EventColumns)."""
        state = None
        if shape.state:
            size = len(shape.states) + 1
            value = events.labels[shape.state]
            code = np.zeros(len(events), np.int64)
            for i, v in enumerate(shape.states):
                code[np.asarray(value == v, dtype=bool)] = i + 1
            state = np.where(code > 0, events.ts * size + code, NO_STATE)
        return cls([events.numbers[f] for f in shape.fields],
                   [events.equals(field, value) for _, field, value in shape.counters],
                   [np.nan_to_num(events.numbers[a] * events.numbers[b], nan=0.0) for _, a, b in shape.products],
                   state)

    def take(self, idx: np.ndarray) -> "Columns":
        return Columns([x[idx] for x in self.fields], [x[idx] for x in self.counters],
                       [x[idx] for x in self.products], None if self.state is None else self.state[idx])


# ---------------------------------------------------------------- records and what operators read


class FieldStats(NamedTuple):
    """One numeric field's readings in a window: how many, their sum, m2 = Σ(x − mean)²,
    and the extremes (None when there was no reading)."""

    count: int
    sum: float
    m2: float
    min: float | None
    max: float | None

    def merge(self, other: FieldStats) -> FieldStats:
        """The readings of both (Chan et al.'s parallel update for m2)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.sum / other.count - self.sum / self.count
        return FieldStats(count, self.sum + other.sum,
                          self.m2 + other.m2 + delta * delta * self.count * other.count / count,
                          min(self.min, other.min), max(self.max, other.max))  # type: ignore[type-var]

    def figures(self) -> dict[str, float | int | None]:
        """What operators read of the field; variance is the population variance."""
        if self.count == 0:
            return {"count": 0, "sum": 0.0, "min": None, "max": None, "mean": None, "variance": None}
        return {"count": self.count, "sum": self.sum, "min": self.min, "max": self.max,
                "mean": self.sum / self.count, "variance": self.m2 / self.count}


NO_READINGS = FieldStats(0, 0.0, 0.0, None, None)


class Latest(NamedTuple):
    """The state field's value with the newest event time, and that time."""

    ts: int
    value: str

    def later(self, other: Latest | None) -> Latest:
        """The later of two; a tie on event time picks the larger value, so the result
        doesn't depend on arrival order."""
        if other is None:
            return self
        return max(self, other, key=lambda s: (s.ts, str(s.value)))


class Agg(NamedTuple):
    """One window's figures of an entity or an area (or a partition's share of them)."""

    events: int
    fields: dict[str, FieldStats]  # per numeric field of the shape
    counters: dict[str, int]  # per counter: the events matching it
    products: dict[str, float]  # per product a·b: Σ a·b
    latest: Latest | None  # of the shape's state field; None without one, or no reading

    @classmethod
    def empty(cls, shape: Shape) -> Agg:
        return cls(0, {f: NO_READINGS for f in shape.fields}, {c: 0 for c, _, _ in shape.counters},
                   {p: 0.0 for p, _, _ in shape.products}, None)

    def merge(self, other: Agg) -> Agg:
        """Both together. Floats are added in the order of the calls, so readers that merge
        the same aggregates in the same order agree to the last bit."""
        return Agg(self.events + other.events,
                   {f: v.merge(other.fields[f]) for f, v in self.fields.items()},
                   {c: v + other.counters[c] for c, v in self.counters.items()},
                   {p: v + other.products[p] for p, v in self.products.items()},
                   other.latest if self.latest is None else self.latest.later(other.latest))

    def figures(self, domain: str) -> dict[str, Any]:
        """The domain figures of contract §5's views, plus every field's statistics."""
        f = {name: v.figures() for name, v in self.fields.items()}
        out: dict[str, Any] = {"events": self.events, **self.counters}
        if domain == "gate":
            out["max_temperature_c"] = f["temperature_c"]["max"]
        elif domain == "traffic":
            volume = f["volume"]["sum"]
            out |= {"volume": _whole(volume), "speed_kmh_mean": f["speed_kmh"]["mean"],
                    "speed_kmh_weighted": self.products["speed_x_volume"] / volume if volume else None,
                    "occupancy_mean": f["occupancy"]["mean"]}
        elif domain == "grid":
            out |= {"load_kw_mean": f["load_kw"]["mean"], "load_kw_max": f["load_kw"]["max"],
                    "voltage_kv_min": f["voltage_kv"]["min"], "voltage_kv_max": f["voltage_kv"]["max"],
                    "frequency_hz_min": f["frequency_hz"]["min"],
                    "frequency_hz_max": f["frequency_hz"]["max"],
                    "breaker": self.latest.value if self.latest else None}
        out["fields"] = f
        return out


def _whole(x: float) -> float | int:
    """A count summed as floats reads as the count it is (995, not 995.0)."""
    return int(x) if float(x).is_integer() else x


def unpack(cols: dict[str, Any]) -> Iterator[tuple[int, Agg]]:
    """A window record's columns (`Block.columns`) → (row, Agg) for each row."""
    fields = cols["f"].items()
    counters, products, state = cols["c"].items(), cols["p"].items(), cols.get("s")
    for i, events in enumerate(cols["n"]):
        latest = None
        if state is not None and state["value"][i] is not None:
            latest = Latest(state["ts"][i], state["value"][i])
        yield i, Agg(events,
                     {name: FieldStats(c["count"][i], c["sum"][i], c["m2"][i], c["min"][i], c["max"][i])
                      for name, c in fields},
                     {k: v[i] for k, v in counters}, {k: v[i] for k, v in products}, latest)


def field_columns(cols: dict[str, Any], field: str) -> dict[str, list[Any]]:
    """One numeric field's columns of a window record: count, sum, m2, min and max."""
    return cols["f"][field]


def entity_rows(doc: dict[str, Any]) -> Iterator[tuple[str, Agg]]:
    """An aggregates record → (entity, its window's Agg) per row."""
    for i, agg in unpack(doc["cols"]):
        yield doc["entities"][i], agg


def area_rows(doc: dict[str, Any]) -> Iterator[tuple[str, str, Agg]]:
    """A rollups record → (level, area, this partition's share) per row."""
    for level, part in doc["levels"].items():
        for i, agg in unpack(part["cols"]):
            yield level, part["areas"][i], agg


def merge_all(shape: Shape, aggs: Iterable[Agg]) -> Agg:
    """All of them, added in the order given."""
    out = Agg.empty(shape)
    for a in aggs:
        out = out.merge(a)
    return out


def recent(domain: str, windows: dict[int, Agg], since_ms: int) -> dict[str, Any] | None:
    """Figures of the windows starting at or after `since_ms`, merged in start order (so
    every reader adds the floats alike); None when there are none. Sliding views."""
    aggs = [agg for ws, agg in sorted(windows.items()) if ws >= since_ms]
    return merge_all(SHAPES[domain], aggs).figures(domain) if aggs else None
