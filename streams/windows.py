"""Event-time window aggregates: a mergeable summary of one entity's events in one window.

An aggregate is a monoid: `merge(aggregate(A), aggregate(B)) == aggregate(A + B)` (up to
float rounding). That one property is what lets a batch of events be folded into stored
state with a single write per (entity, window), sliding views be merged from tumbling
windows, areas be rolled up from their entities, and partial area sums from different
partitions be added by the API.

A stored aggregate is a small JSON-friendly dict:
    {"n": events,
     "f": {field: [count, mean, m2, min, max]},   # numeric fields; m2 = Σ(x - mean)²
     "c": {counter: int},                          # events matching a predicate
     "p": {product: float},                        # Σ a·b, e.g. speed × volume
     "s": [ts, value] | None}                      # latest categorical state by event time
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Sequence, TypeVar

import numpy as np

Event = dict[str, Any]
Agg = dict[str, Any]
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Shape:
    """What a domain's windows hold."""

    fields: tuple[str, ...]
    counters: tuple[tuple[str, Callable[[Event], bool]], ...] = ()
    products: tuple[tuple[str, str, str], ...] = ()
    state: str | None = None


def _is(field: str, value: Any) -> Callable[[Event], bool]:
    return lambda e: e.get(field) == value


SHAPES: dict[str, Shape] = {
    "gate": Shape(
        fields=("temperature_c",),
        counters=(
            ("passes", _is("type", "gate.pass")),
            ("in", _is("direction", "in")),
            ("out", _is("direction", "out")),
            ("denied", _is("result", "denied")),
            ("tailgates", _is("tailgate", True)),
            ("heartbeats", _is("type", "gate.heartbeat")),
        ),
    ),
    "traffic": Shape(
        fields=("volume", "speed_kmh", "occupancy"),
        products=(("speed_x_volume", "speed_kmh", "volume"),),
    ),
    "grid": Shape(
        fields=("load_kw", "voltage_kv", "frequency_hz", "power_factor"),
        counters=(("breaker_open", _is("breaker", "open")),),
        state="breaker",
    ),
}


def empty(shape: Shape) -> Agg:
    return {"n": 0, "f": {f: [0, 0.0, 0.0, None, None] for f in shape.fields},
            "c": {c: 0 for c, _ in shape.counters}, "p": {p: 0.0 for p, _, _ in shape.products},
            "s": None}


# ---------------------------------------------------------------- merging


def _merge_field(a: list, b: list) -> list:
    na, nb = a[0], b[0]
    if nb == 0:
        return a
    if na == 0:
        return b
    n = na + nb
    delta = b[1] - a[1]
    # Chan et al.'s parallel update: exact in exact arithmetic, stable in floats.
    return [n, a[1] + delta * nb / n, a[2] + b[2] + delta * delta * na * nb / n,
            min(a[3], b[3]), max(a[4], b[4])]


def _later(a: list | None, b: list | None) -> list | None:
    if a is None or b is None:
        return b if a is None else a
    # Ties on event time pick the larger value, so the result doesn't depend on arrival order.
    return max(a, b, key=lambda s: (s[0], str(s[1])))


def merge(a: Agg, b: Agg) -> Agg:
    return {"n": a["n"] + b["n"],
            "f": {f: _merge_field(v, b["f"][f]) for f, v in a["f"].items()},
            "c": {c: v + b["c"][c] for c, v in a["c"].items()},
            "p": {p: v + b["p"][p] for p, v in a["p"].items()},
            "s": _later(a["s"], b["s"])}


def merge_all(shape: Shape, aggs: Iterable[Agg]) -> Agg:
    out = empty(shape)
    for a in aggs:
        out = merge(out, a)
    return out


def recent(domain: str, windows: dict[int, Agg], since_ms: int) -> dict[str, Any] | None:
    """Figures of the windows starting at or after `since_ms`, merged in start order (so
    every reader adds the floats alike); None when there are none. Sliding views."""
    aggs = [agg for ws, agg in sorted(windows.items()) if ws >= since_ms]
    return figures(domain, merge_all(SHAPES[domain], aggs)) if aggs else None


# ---------------------------------------------------------------- batches


def window_start(ts: np.ndarray | int, window_ms: int) -> Any:
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


def _column(events: Sequence[Event], name: str) -> np.ndarray:
    # None (absent optional field) becomes NaN, which every reduction below skips.
    return np.array([e.get(name) for e in events], dtype=float)


@dataclass(frozen=True)
class Columns:
    """A batch's events as one array per statistic, extracted once and then grouped any
    number of ways (entity windows, then each area level)."""

    fields: dict[str, np.ndarray]
    counters: dict[str, np.ndarray]
    products: dict[str, np.ndarray]
    ts: np.ndarray
    states: list[Any] | None  # the categorical state field's value per event

    @classmethod
    def of(cls, shape: Shape, events: Sequence[Event]) -> "Columns":
        n = len(events)
        return cls(
            fields={f: _column(events, f) for f in shape.fields},
            counters={c: np.fromiter(map(pred, events), bool, n) for c, pred in shape.counters},
            products={p: np.nan_to_num(_column(events, a) * _column(events, b), nan=0.0)
                      for p, a, b in shape.products},
            ts=np.fromiter((e["ts"] for e in events), np.int64, n),
            states=[e.get(shape.state) for e in events] if shape.state else None)

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: Sequence[int]) -> "Columns":
        return Columns({f: v[idx] for f, v in self.fields.items()},
                       {c: v[idx] for c, v in self.counters.items()},
                       {p: v[idx] for p, v in self.products.items()}, self.ts[idx],
                       None if self.states is None else [self.states[i] for i in idx])


def window_keys(events: Sequence[Event], window_ms: int) -> list[tuple[str, int]]:
    return [(e["entity"], e["ts"] - e["ts"] % window_ms) for e in events]


def aggregate(shape: Shape, events: Sequence[Event], window_ms: int) -> dict[tuple[str, int], Agg]:
    """Aggregate validated events by (entity, window start)."""
    return aggregate_by(Columns.of(shape, events), window_keys(events, window_ms))


def aggregate_by(cols: Columns, keys: Sequence[K]) -> dict[K, Agg]:
    """Aggregate events by any hashable key per event (entity window, area window, ...),
    vectorised per field: one numpy reduction per statistic, not a loop per event."""
    n = len(cols)
    if n == 0:
        return {}
    ids: dict[K, int] = {}
    code = np.fromiter((ids.setdefault(k, len(ids)) for k in keys), np.int64, n)
    order = np.argsort(code, kind="stable")
    sorted_code = code[order]
    first = np.ones(n, bool)
    first[1:] = sorted_code[1:] != sorted_code[:-1]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    sizes = np.diff(np.append(starts, n))

    # Per statistic one numpy reduction; then plain lists, since reading numpy scalars
    # one group at a time cost more than the reductions.
    fields = []
    for column in cols.fields.values():
        x = column[order]
        ok = ~np.isnan(x)
        count = np.add.reduceat(ok.astype(np.int64), starts)
        total = np.add.reduceat(np.where(ok, x, 0.0), starts)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        dev = np.where(ok, x - mean[group], 0.0)
        fields.append([[c, m, q, lo, hi] if c else [0, 0.0, 0.0, None, None] for c, m, q, lo, hi in zip(
            count.tolist(), mean.tolist(), np.add.reduceat(dev * dev, starts).tolist(),
            np.fmin.reduceat(x, starts).tolist(), np.fmax.reduceat(x, starts).tolist())])
    counters = [np.add.reduceat(v[order].astype(np.int64), starts).tolist() for v in cols.counters.values()]
    products = [np.add.reduceat(v[order], starts).tolist() for v in cols.products.values()]
    states = _latest_states(cols, order, starts) if cols.states is not None else [None] * len(starts)

    names_f, names_c, names_p, g = list(cols.fields), list(cols.counters), list(cols.products), len(starts)
    first_keys = [keys[i] for i in order[starts].tolist()]
    return {k: {"n": n, "f": dict(zip(names_f, f)), "c": dict(zip(names_c, c)), "p": dict(zip(names_p, p)), "s": st}
            for k, n, f, c, p, st in zip(first_keys, sizes.tolist(), _rows(fields, g), _rows(counters, g),
                                         _rows(products, g), states)}


def _rows(columns: list[list], groups: int) -> Iterable[tuple]:
    """Each group's entries of the columns (empty tuples when there are none)."""
    return zip(*columns) if columns else [()] * groups


def _latest_states(cols: Columns, order: np.ndarray, starts: np.ndarray) -> list[list | None]:
    assert cols.states is not None
    ts, order_ = cols.ts.tolist(), order.tolist()
    bounds = starts.tolist() + [len(order_)]
    out: list[list | None] = []
    for lo, hi in zip(bounds, bounds[1:]):
        best = None
        for i in order_[lo:hi]:
            value = cols.states[i]
            if value is not None:
                best = _later(best, [ts[i], value])
        out.append(best)
    return out


# ---------------------------------------------------------------- what operators read


def stats(field: list) -> dict[str, float | int | None]:
    count, mean, m2, lo, hi = field
    if count == 0:
        return {"count": 0, "sum": 0.0, "min": None, "max": None, "mean": None, "variance": None}
    return {"count": count, "sum": mean * count, "min": lo, "max": hi, "mean": mean,
            "variance": m2 / count}


def figures(domain: str, agg: Agg) -> dict[str, Any]:
    """The domain figures of contract §5's views, plus every field's statistics.

    Variance is the population variance of the window's readings.
    """
    f = {name: stats(v) for name, v in agg["f"].items()}
    out: dict[str, Any] = {"events": agg["n"], **agg["c"]}
    if domain == "gate":
        out["max_temperature_c"] = f["temperature_c"]["max"]
    elif domain == "traffic":
        volume = f["volume"]["sum"]
        out |= {"volume": volume, "speed_kmh_mean": f["speed_kmh"]["mean"],
                "speed_kmh_weighted": agg["p"]["speed_x_volume"] / volume if volume else None,
                "occupancy_mean": f["occupancy"]["mean"]}
    elif domain == "grid":
        out |= {"load_kw_mean": f["load_kw"]["mean"], "load_kw_max": f["load_kw"]["max"],
                "voltage_kv_min": f["voltage_kv"]["min"], "voltage_kv_max": f["voltage_kv"]["max"],
                "frequency_hz_min": f["frequency_hz"]["min"],
                "frequency_hz_max": f["frequency_hz"]["max"],
                "breaker": agg["s"][1] if agg["s"] else None}
    out["fields"] = f
    return out
