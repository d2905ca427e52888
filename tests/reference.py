"""A plain-Python reference for window aggregates: obviously right, slow, used only by tests."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

from streams.windows import SHAPES, Agg

Event = dict[str, Any]


def reference_windows(domain: str, events: Iterable[Event], window_ms: int,
                      lateness_ms: int | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (entity, window start): every statistic computed from the list of its events.

    With `lateness_ms`, events are taken in arrival order and one whose window had
    closed (stream time ≥ window end + lateness) is left out, as the contract says.
    """
    shape = SHAPES[domain]
    groups: dict[tuple[str, int], list[Event]] = defaultdict(list)
    stream_time = None
    for e in events:
        start = e["ts"] - e["ts"] % window_ms
        if lateness_ms is not None and stream_time is not None and start + window_ms + lateness_ms <= stream_time:
            continue
        stream_time = e["ts"] if stream_time is None else max(stream_time, e["ts"])
        groups[(e["entity"], start)].append(e)
    out = {}
    for key, evs in groups.items():
        doc: dict[str, Any] = {"events": len(evs)}
        for f in shape.fields:
            xs = [e[f] for e in evs if e.get(f) is not None]
            mean = sum(xs) / len(xs) if xs else None
            doc[f] = {"count": len(xs), "sum": float(sum(xs)), "min": min(xs, default=None),
                      "max": max(xs, default=None), "mean": mean,
                      "variance": sum((x - mean) ** 2 for x in xs) / len(xs) if xs else None}
        for c, field, value in shape.counters:
            doc[c] = sum(1 for e in evs if e.get(field) == value)
        for p, a, b in shape.products:
            doc[p] = sum(e[a] * e[b] for e in evs if e.get(a) is not None and e.get(b) is not None)
        if shape.state:
            seen = [(e["ts"], str(e[shape.state]), e[shape.state]) for e in evs if e.get(shape.state) is not None]
            doc["state"] = max(seen)[2] if seen else None
        out[key] = doc
    return out


def close(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    """Floats summed in another order differ in the last bits; everything else must be equal."""
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def assert_matches(domain: str, agg: Agg, ref: dict[str, Any]) -> None:
    """A stored aggregate equals the reference: counts exactly, floats to 1e-9."""
    shape = SHAPES[domain]
    assert agg.events == ref["events"]
    for f in shape.fields:
        count, total, m2, lo, hi = agg.fields[f]
        r = ref[f]
        assert count == r["count"], f
        assert close(lo, r["min"]) and close(hi, r["max"]), f
        if count:
            assert close(total / count, r["mean"]) and close(total, r["sum"]), f
            assert close(m2 / count, r["variance"], rel=1e-6), f
    for c, _, _ in shape.counters:
        assert agg.counters[c] == ref[c], c
    for p, _, _ in shape.products:
        assert close(agg.products[p], ref[p]), p
    if shape.state:
        assert (agg.latest.value if agg.latest else None) == ref["state"]
