"""Window maths against the plain-Python reference, without a broker."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest

from streams.columns import COLUMNS, EventColumns
from streams.state import SlotIndex
from streams.windows import (COUNT, COUNT_MAX, SHAPES, Agg, Block, Columns, entity_rows, late_mask, merge_all,
                             stream_times, window_start)
from tests.reference import assert_matches, reference_windows

W = 60_000
T0 = 1_795_219_200_000  # 2026-11-21T00:00:00Z, a window boundary


def columns_of(domain: str, events: list[dict[str, Any]]) -> EventColumns:
    numeric, labels = COLUMNS[domain]
    return EventColumns(domain, np.fromiter([e["entity"] for e in events], object),
                        np.array([e["ts"] for e in events], np.int64), np.arange(len(events)),
                        {f: np.array([e.get(f) for e in events], dtype=float) for f in numeric},
                        {f: np.fromiter([e.get(f) for e in events], object) for f in labels})


def fold(blocks: dict[int, Block], slots: SlotIndex, domain: str, events: list[dict[str, Any]]) -> None:
    """Fold events into per-window blocks, as a worker's step does."""
    if not events:
        return
    cols = columns_of(domain, events)
    columns = Columns.of(SHAPES[domain], cols)
    starts = window_start(cols.ts, W)
    mine = slots.of(cols.entity)
    for ws in np.unique(starts).tolist():
        idx = np.flatnonzero(starts == ws)
        blocks.setdefault(ws, Block(SHAPES[domain], 2)).fold(mine[idx], columns.take(idx))


def aggregate(domain: str, events: list[dict[str, Any]]) -> dict[tuple[str, int], Agg]:
    blocks: dict[int, Block] = {}
    slots = SlotIndex()
    fold(blocks, slots, domain, events)
    return read(domain, blocks, slots)


def read(domain: str, blocks: dict[int, Block], slots: SlotIndex) -> dict[tuple[str, int], Agg]:
    """Every window's Agg, through the wire form the API reads."""
    out = {}
    for ws, block in blocks.items():
        present = block.present()
        doc = orjson.loads(orjson.dumps({"domain": domain, "entities": [slots.ids[i] for i in present],
                                         "cols": block.columns(present)}, option=orjson.OPT_SERIALIZE_NUMPY))
        for entity, agg in entity_rows(doc):
            out[(entity, ws)] = agg
    return out


def city_events(domain: str, n: int, seed: int = 1, spread_ms: int = 5 * W) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + rnd.randrange(spread_ms)
        if domain == "gate":
            e = {"type": rnd.choice(["gate.pass"] * 5 + ["gate.heartbeat"]), "entity": f"G-{rnd.randrange(5)}",
                 "ts": ts, "direction": rnd.choice(["in", "out"]), "result": rnd.choice(["granted"] * 4 + ["denied"]),
                 "tailgate": rnd.random() < 0.1}
            if rnd.random() < 0.5:
                e["temperature_c"] = round(rnd.uniform(36.0, 38.5), 1)
        elif domain == "traffic":
            e = {"type": "traffic.flow", "entity": f"T-{rnd.randrange(5)}", "ts": ts,
                 "volume": rnd.randrange(0, 40), "speed_kmh": rnd.uniform(5, 80), "occupancy": rnd.random()}
        else:
            e = {"type": "grid.measurement", "entity": f"F-{rnd.randrange(5)}", "ts": ts,
                 "load_kw": rnd.uniform(-50, 6000), "voltage_kv": rnd.uniform(9.5, 10.5),
                 "frequency_hz": rnd.uniform(49.9, 50.1), "breaker": rnd.choice(["closed"] * 9 + ["open"])}
            if rnd.random() < 0.5:
                e["power_factor"] = rnd.uniform(0.8, 1.0)
        out.append(e)
    return out


@pytest.mark.parametrize("domain", ["gate", "traffic", "grid"])
def test_batch_aggregate_equals_the_reference(domain: str) -> None:
    events = city_events(domain, 2000)
    got = aggregate(domain, events)
    ref = reference_windows(domain, events, W)
    assert got.keys() == ref.keys()
    for key in ref:
        assert_matches(domain, got[key], ref[key])


@pytest.mark.parametrize("domain", ["gate", "traffic", "grid"])
def test_folding_batches_in_any_split_equals_aggregating_all(domain: str) -> None:
    shape = SHAPES[domain]
    events = city_events(domain, 1500, seed=2)
    ref = reference_windows(domain, events, W)
    rnd = random.Random(3)
    rnd.shuffle(events)
    blocks: dict[int, Block] = {}
    slots = SlotIndex()
    merged: dict[tuple[str, int], Any] = {}  # the same splits merged as Aggs, as the API adds shares
    i = 0
    while i < len(events):
        step = rnd.randrange(1, 200)
        fold(blocks, slots, domain, events[i:i + step])
        for key, agg in aggregate(domain, events[i:i + step]).items():
            merged[key] = merged.get(key, Agg.empty(shape)).merge(agg)
        i += step
    folded = read(domain, blocks, slots)
    for key in ref:
        assert_matches(domain, folded[key], ref[key])
        assert_matches(domain, merged[key], ref[key])


def test_counts_stay_exact_sums() -> None:
    """A window's volume is the sum of the readings, not mean × count (995 came out as
    994.9999999999999 that way)."""
    flows = [{"type": "traffic.flow", "entity": "T-1", "ts": T0 + i, "volume": v, "speed_kmh": 30.0,
              "occupancy": 0.1} for i, v in enumerate([333, 331, 331])]
    agg = aggregate("traffic", flows)[("T-1", T0)]
    assert agg.figures("traffic")["volume"] == 995


def test_sliding_views_merge_tumbling_windows() -> None:
    shape = SHAPES["traffic"]
    events = [e for e in city_events("traffic", 3000, spread_ms=15 * W) if e["entity"] == "T-1"]
    windows = aggregate("traffic", events)
    last5 = merge_all(shape, (a for (ent, ws), a in windows.items() if ws >= T0 + 10 * W))
    ref = reference_windows("traffic", [e for e in events if e["ts"] >= T0 + 10 * W], 5 * W)
    assert_matches("traffic", last5, ref[("T-1", T0 + 10 * W)])


def test_late_events_are_judged_against_stream_time_before_them() -> None:
    ts = np.array([T0 + 10, T0 + 3 * W + 5, T0 + 20, T0 + W + 1, T0 + 4 * W, T0 + 2 * W + 7])
    times = stream_times(ts, None)
    late, now = late_mask(ts, W, 2 * W, times[:-1]), times[-1]
    # T0+20: window [T0, T0+W) closes at T0+3W, stream time T0+3W+5 → late.
    # T0+W+1: closes at T0+4W > T0+3W+5 → on time. T0+2W+7: closes at T0+5W → on time.
    assert late.tolist() == [False, False, True, False, False, False]
    assert now == T0 + 4 * W
    # Batching must not matter: the same events in two calls give the same answer.
    first = stream_times(ts[:3], None)
    a, mid = late_mask(ts[:3], W, 2 * W, first[:-1]), int(first[-1])
    second = stream_times(ts[3:], mid)
    b, end = late_mask(ts[3:], W, 2 * W, second[:-1]), second[-1]
    assert np.concatenate([a, b]).tolist() == late.tolist() and end == now


def test_operator_figures() -> None:
    flows = [{"type": "traffic.flow", "entity": "T-1", "ts": T0 + i, "volume": v, "speed_kmh": s, "occupancy": o}
             for i, (v, s, o) in enumerate([(10, 60.0, 0.1), (30, 20.0, 0.5)])]
    fig = aggregate("traffic", flows)[("T-1", T0)].figures("traffic")
    assert fig["volume"] == 40 and fig["speed_kmh_mean"] == 40.0
    assert fig["speed_kmh_weighted"] == 30.0  # (10·60 + 30·20) / 40
    assert fig["occupancy_mean"] == pytest.approx(0.3)
    grid = [{"type": "grid.measurement", "entity": "F-1", "ts": T0 + i, "load_kw": l, "voltage_kv": v,
             "frequency_hz": 50.0, "breaker": b} for i, (l, v, b) in enumerate([(100.0, 10.2, "closed"),
                                                                               (300.0, 9.1, "open")])]
    fig = aggregate("grid", grid)[("F-1", T0)].figures("grid")
    assert (fig["load_kw_mean"], fig["load_kw_max"], fig["voltage_kv_min"], fig["breaker"]) == (200.0, 300.0, 9.1, "open")
    assert fig["breaker_open"] == 1


def test_a_count_that_would_pass_32_bits_widens_to_64_and_stays_exact() -> None:
    """A day-long window of a busy area share can count more than 2.1 billion events."""
    flows = [{"type": "traffic.flow", "entity": "T-1", "ts": T0 + i, "volume": 3, "speed_kmh": 30.0,
              "occupancy": 0.1} for i in range(5)]
    blocks: dict[int, Block] = {}
    slots = SlotIndex()
    fold(blocks, slots, "traffic", flows[:2])
    block = blocks[T0]
    assert block.n.dtype == COUNT
    block.n[0] += COUNT_MAX - 3
    block.count[:, 0] += COUNT_MAX - 3
    fold(blocks, slots, "traffic", flows[2:])
    assert block.n.dtype == block.count.dtype == np.int64
    assert block.n[0] == COUNT_MAX + 2 and block.count[:, 0].tolist() == [COUNT_MAX + 2] * 3
    block.reserve(4 * block.capacity)  # room for more devices keeps the counts as wide
    assert block.n.dtype == np.int64 and block.n[0] == COUNT_MAX + 2
