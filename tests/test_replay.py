"""Crash safety at the step level, without a broker: a worker that dies at any point,
restarted from its newest snapshot and fed the records after it cut into other batches,
ends with the same state and the same outputs as one that never stopped."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streams.detectors import detector
from streams.processor import PartitionProcessor, Record
from streams.registry import Registry
from streams.rules import RuleBook
from streams.state import PartitionState, load, snapshot_writes
from streams.windows import COUNT, NO_STATE, SHAPES, entity_rows
from tests.reference import assert_matches
from tests.test_stream_engine import LATENESS, W, domain_of, entity_of, generate

DOMAIN = "grid"
PARTITIONS = 1
EVENTS = [e for e in generate(3000, seed=31, entities=6) if domain_of(e) == DOMAIN]
RECORDS = [Record(0, i, entity_of(e).encode(), orjson.dumps(e)) for i, e in enumerate(EVENTS)]


def processor() -> PartitionProcessor:
    registry = Registry()
    return PartitionProcessor(DOMAIN, "t", PARTITIONS, W, LATENESS, registry, clock=lambda: 4e9,
                              detector=detector(DOMAIN, RuleBook(), registry))


def run(cuts: list[int], crashes: dict[int, int]) -> tuple[PartitionState, dict, set]:
    """Process RECORDS in steps of `cuts` sizes; at step i in `crashes`, store a snapshot,
    keep only the first crashes[i] of its table writes (a crash while writing it), lose
    everything in memory, and resume from what the table holds."""
    proc = processor()
    state = PartitionState(SHAPES[DOMAIN])
    table: dict[str, bytes] = {}
    meta = None
    windows: dict[tuple[str, int], dict[str, Any]] = {}
    detections: set[bytes] = set()
    at, step = 0, 0
    sizes = iter(cuts)
    while at < len(RECORDS):
        size = next(sizes, 50)
        out = proc.step(0, RECORDS[at:at + size], state)
        at += size
        for kind, _, doc in out.closed:
            if kind == "aggregates":
                d = orjson.loads(doc)
                for entity, agg in entity_rows(d):
                    windows[(entity, d["window_start"])] = agg
        detections.update(doc for _, doc in out.detections)
        if step in crashes:
            new_meta, writes = snapshot_writes(0, state, meta)
            kept = writes[:crashes[step] % (len(writes) + 1)]
            table.update(kept)
            if len(kept) == len(writes):
                meta = new_meta
            proc = processor()  # the process died: nothing derived survives
            state, meta = load(SHAPES[DOMAIN], 0, table.get)
            at = state.progress.offset + 1  # the group's commit is at most this
        step += 1
    return state, windows, detections


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_any_crash_then_replay_in_other_batches_ends_where_an_uninterrupted_run_ends(seed: int) -> None:
    rnd = random.Random(seed)
    whole_state, whole_windows, whole_detections = run([len(RECORDS)], {})
    cuts = [rnd.randint(1, 120) for _ in range(len(RECORDS))]
    crashes = {rnd.randrange(60): rnd.randrange(10) for _ in range(rnd.randint(1, 4))}
    state, windows, detections = run(cuts, crashes)
    assert state.progress == whole_state.progress
    assert state.detectors == whole_state.detectors
    assert windows.keys() == whole_windows.keys()
    for key, agg in whole_windows.items():
        ref = {"events": agg.events, **{f: {"count": c, "sum": s, "min": lo, "max": hi,
                                            "mean": s / c if c else None, "variance": m2 / c if c else None}
                                        for f, (c, s, m2, lo, hi) in agg.fields.items()},
               **agg.counters, **agg.products, "state": agg.latest.value if agg.latest else None}
        assert_matches(DOMAIN, windows[key], ref)
    # a replay repeats detections, identical to the first time (the alert manager dedupes them)
    assert detections == whole_detections


@pytest.mark.parametrize("domain", ["gate", "traffic", "grid"])
def test_every_domains_rule_state_survives_a_snapshot_exactly(domain: str) -> None:
    """The rules' columns, sparse states and all: a worker restarted from a snapshot taken
    mid-stream ends with the state and the detections of one that never stopped."""
    events = [e for e in generate(3000, seed=5, entities=6) if domain_of(e) == domain]
    records = [Record(0, i, entity_of(e).encode(), orjson.dumps(e)) for i, e in enumerate(events)]

    def fresh() -> PartitionProcessor:
        registry = Registry()
        return PartitionProcessor(domain, "t", 1, W, LATENESS, registry, clock=lambda: 4e9,
                                  detector=detector(domain, RuleBook(), registry))

    whole, whole_state = fresh(), PartitionState(SHAPES[domain])
    expected = [d for i in range(0, len(records), 40) for d in whole.step(0, records[i:i + 40], whole_state).detections]
    first, state = fresh(), PartitionState(SHAPES[domain])
    half = len(records) // 80 * 40  # at a step boundary of the whole run, so the order compares too
    found = [d for i in range(0, half, 40) for d in first.step(0, records[i:min(i + 40, half)], state).detections]
    _, writes = snapshot_writes(0, state, None)
    restored, _ = load(SHAPES[domain], 0, dict(writes).get)
    assert restored.detectors == state.detectors
    again = fresh()
    found += [d for i in range(half, len(records), 40) for d in again.step(0, records[i:i + 40], restored).detections]
    assert restored.detectors == whole_state.detectors
    assert found == expected and expected  # the same detections, in the same order


@pytest.mark.parametrize("domain", ["gate", "traffic", "grid"])
def test_a_layout_3_snapshot_with_64_bit_counts_and_a_state_column_for_every_shape_is_read_exactly(
        domain: str) -> None:
    """Snapshots of layout 3, from before the window counts were 32-bit and shapes without
    a state field stopped keeping a state column, load and go on to the same windows."""
    events = [e for e in generate(3000, seed=7, entities=6) if domain_of(e) == domain]
    records = [Record(0, i, entity_of(e).encode(), orjson.dumps(e)) for i, e in enumerate(events)]
    def fresh() -> PartitionProcessor:
        return PartitionProcessor(domain, "t", 1, W, LATENESS, Registry(), clock=lambda: 4e9)

    whole, proc = PartitionState(SHAPES[domain]), fresh()
    for i in range(0, len(records), 40):
        proc.step(0, records[i:i + 40], whole)
    state, first, half = PartitionState(SHAPES[domain]), fresh(), len(records) // 80 * 40
    for i in range(0, half, 40):
        first.step(0, records[i:i + 40], state)
    for block in [*state.windows.values(), *(b for levels in state.rollups.values() for b in levels.values())]:
        block.n, block.count, block.counters = (a.astype(np.int64) for a in (block.n, block.count, block.counters))
        if not block.state.size:
            block.state = np.full(block.capacity, NO_STATE, np.int64)
    _, writes = snapshot_writes(0, state, None)
    table = dict(writes)
    size = int.from_bytes(table["0/a/0"][:8], "big")
    header = orjson.loads(table["0/a/0"][8:8 + size])
    assert header["layout"] == 4
    old = orjson.dumps({**header, "layout": 3})
    table["0/a/0"] = len(old).to_bytes(8, "big") + old + table["0/a/0"][8 + size:]
    restored, _ = load(SHAPES[domain], 0, table.get)
    for block in [*restored.windows.values(), *(b for levels in restored.rollups.values() for b in levels.values())]:
        assert block.n.dtype == block.count.dtype == block.counters.dtype == COUNT
        assert block.state.size == (block.capacity if SHAPES[domain].state else 0)
        block.reserve(2 * block.capacity)  # room for new devices, as a new one's first event makes
    again = fresh()
    for i in range(half, len(records), 40):
        again.step(0, records[i:i + 40], restored)
    assert restored.windows.keys() == whole.windows.keys()
    for ws, block in whole.windows.items():
        assert {k: v[..., :len(whole.entities)].tolist() for k, v in block.arrays().items()} == \
            {k: v[..., :len(whole.entities)].tolist() for k, v in restored.windows[ws].arrays().items()}


def test_a_snapshot_of_an_older_layout_is_refused_in_one_line() -> None:
    state = PartitionState(SHAPES[DOMAIN])
    _, writes = snapshot_writes(0, state, None)
    table = dict(writes)
    header_size = int.from_bytes(table["0/a/0"][:8], "big")
    header = orjson.loads(table["0/a/0"][8:8 + header_size])
    old = orjson.dumps({**header, "layout": 2})
    table["0/a/0"] = len(old).to_bytes(8, "big") + old + table["0/a/0"][8 + header_size:]
    with pytest.raises(ValueError) as refused:
        load(SHAPES[DOMAIN], 0, table.get)
    assert "layout 2" in str(refused.value) and "reset the worker's tables" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("domain", ["gate", "traffic", "grid"])
def test_the_rules_decide_the_same_in_one_step_as_record_by_record(domain: str) -> None:
    """One step of every record judges each entity's events in rounds (its k-th event
    beside every other entity's k-th); record by record, each alone: the same detections."""
    events = [e for e in generate(3000, seed=9, entities=6) if domain_of(e) == domain]
    records = [Record(0, i, entity_of(e).encode(), orjson.dumps(e)) for i, e in enumerate(events)]

    def detections(size: int) -> set[bytes]:
        registry = Registry()
        proc = PartitionProcessor(domain, "t", 1, W, LATENESS, registry, clock=lambda: 4e9,
                                  detector=detector(domain, RuleBook(), registry))
        state = PartitionState(SHAPES[domain])
        return {doc for i in range(0, len(records), size) for _, doc in proc.step(0, records[i:i + size], state).detections}

    assert detections(len(records)) == detections(1) != set()
