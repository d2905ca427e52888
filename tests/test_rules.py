"""The rule catalogue: each rule fires on the anomaly made for it, and nowhere else.

The scenarios are the simulator's injected anomalies (one generator for tests, the
benchmark and `make run`), judged by the same detectors the workers run.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from benchmarks.rules import detect_city, score
from services.city import City
from services.simulator import KINDS
from streams.detectors.blocks import Timing, idle, sustain
from streams import early_warning
from streams.rules import CATALOGUE, RuleBook, RulesError


@pytest.fixture(scope="module")
def city() -> City:
    return City.sized_for(100, seed=11)


def test_the_catalogue_is_the_contract_list() -> None:
    # The early warnings are judged on forecasts (tests/test_early_warning.py), not on
    # anomalies the simulator injects.
    assert set(CATALOGUE) - set(early_warning.RULES) == {rule for rule, _ in KINDS} == {
        "gate.tailgating", "gate.fever", "gate.denied_burst", "gate.offline", "gate.crowd_surge",
        "traffic.congestion", "traffic.incident", "traffic.sensor_fault", "traffic.anomaly", "traffic.offline",
        "grid.overload", "grid.voltage", "grid.frequency", "grid.outage", "grid.load_anomaly",
        "grid.offline"}


def test_every_rule_finds_its_anomalies_with_precision_and_recall_of_at_least_095(city: City) -> None:
    found, truth, _ = detect_city(city, minutes=30, seed=11, every_s=5.0)
    table = score(found, truth)
    for rule, row in table.items():
        assert row["injected"] >= 3, (rule, row)
        assert row["precision"] >= 0.95 and row["recall"] >= 0.95, (rule, row)


def test_a_normal_city_raises_nothing(city: City) -> None:
    found, truth, n = detect_city(city, minutes=30, seed=12, every_s=None)
    assert truth == [] and n > 100_000
    assert found == []


# ---------------------------------------------------------------- duration and hysteresis

def run(ts: list[int], bad: list[bool], ok: list[bool], timing: Timing, state=None):
    state = state or idle()
    out = sustain(state, timing, np.array(ts), np.array(bad), np.array(ok),
                  np.arange(len(ts), dtype=float), np.zeros(len(ts)))
    return [(kind, t, episode, seq) for kind, t, _, _, episode, seq in out], state


def test_a_condition_fires_only_after_holding_for_its_duration() -> None:
    timing = Timing(raise_ms=30_000, clear_ms=20_000, repeat_ms=60_000)
    out, _ = run([0, 10_000, 20_000, 25_000], [True, True, False, True], [False] * 4, timing)
    assert out == []  # interrupted at 20 s: the clock starts again
    out, _ = run([0, 10_000, 20_000, 30_000], [True] * 4, [False] * 4, timing)
    assert out == [("firing", 30_000, 0, 1)]


def test_a_value_hovering_between_raise_and_clear_neither_flaps_nor_clears() -> None:
    timing = Timing(raise_ms=0, clear_ms=20_000, repeat_ms=60_000)
    ts = list(range(0, 200_000, 10_000))
    bad = [i % 2 == 0 for i in range(len(ts))]  # above the raise level every other reading
    out, state = run(ts, bad, [False] * len(ts), timing)
    assert [o[0] for o in out] == ["firing", "firing", "firing", "firing"]  # one episode, re-reported
    assert {o[2] for o in out} == {0} and state["on"]
    out, _ = run([200_000, 210_000, 220_000], [False] * 3, [True] * 3, timing, state)
    assert out == [("resolved", 220_000, 0, 5)]


def test_replaying_the_same_events_reports_the_same_episode_and_sequence() -> None:
    timing = Timing(raise_ms=0, clear_ms=0, repeat_ms=10_000)
    ts, bad = [0, 10_000, 20_000, 30_000], [True, True, True, False]
    first, _ = run(ts, bad, [not b for b in bad], timing)
    again, _ = run(ts, bad, [not b for b in bad], timing)
    assert first == again == [("firing", 0, 0, 1), ("firing", 10_000, 0, 2), ("firing", 20_000, 0, 3),
                              ("resolved", 30_000, 0, 4)]


# ---------------------------------------------------------------- a road detector falls silent

T0_S = 1_795_219_200  # 2026-11-21T00:00:00Z


def flow(sensor: str, t_s: int) -> dict:
    return {"type": "traffic.flow", "ts": (T0_S + t_s) * 1000, "sensor_id": sensor, "interval_s": 60,
            "volume": 20, "speed_kmh": 45.0, "occupancy": 0.12}


def silences(steps: list[list[dict]], book: RuleBook | None = None) -> list[tuple[str, str, str, int]]:
    """One partition's batches through the traffic detector as the worker runs it: the
    rules over each batch, then silence by the partition's stream time."""
    from streams.columns import decode
    from streams.detectors import Batch, RuleState, detector
    from streams.registry import Registry
    from streams.state import SlotIndex

    det = detector("traffic", book or RuleBook(), Registry())
    state, slots, out, stream_time = RuleState(), SlotIndex(), [], 0
    for events in steps:
        cols, _ = decode("traffic", [(0, None, orjson.dumps({"events": events}))], None)
        out += det.detect(Batch(cols, slots.of(cols.entity)), state)
        stream_time = max(stream_time, int(cols.ts.max()))
        out += det.silent(state, slots.ids, stream_time)
    return [(d.rule, d.entity, d.status, d.ts // 1000 - T0_S) for d in out if d.rule == "traffic.offline"]


def test_a_road_detector_that_misses_three_readings_is_offline_until_it_reports_again() -> None:
    # T-1 stops after its reading at 240 s; T-2, on the same partition, keeps stream time going.
    steps = [[flow("T-2", t)] + ([flow("T-1", t)] if t <= 240 or t >= 720 else []) for t in range(0, 900, 60)]
    assert silences(steps) == [("traffic.offline", "T-1", "firing", 420),  # 240 s + the 180 s timeout
                               ("traffic.offline", "T-1", "resolved", 720)]


def test_a_road_detector_alone_on_its_partition_is_seen_silent_in_its_own_gap() -> None:
    # Nothing else moves its partition's stream time: its next reading shows the gap.
    steps = [[flow("T-1", t)] for t in (0, 60, 120, 180, 240, 600, 660)]
    assert silences(steps) == [("traffic.offline", "T-1", "firing", 420), ("traffic.offline", "T-1", "resolved", 600)]


def test_a_detector_reporting_every_five_minutes_gets_its_timeout_from_the_rules_file(tmp_path: Path) -> None:
    steps = [[flow("T-1", t), flow("T-5", t)] if t % 300 == 0 else [flow("T-1", t)] for t in range(0, 1800, 60)]
    assert {e for _, e, _, _ in silences(steps)} == {"T-5"}  # the default 180 s is too short for it
    f = tmp_path / "rules.yaml"
    f.write_text("overrides:\n  - match: {entity: T-5}\n    rules: {traffic.offline: {timeout_s: 900}}\n")
    assert silences(steps, RuleBook.from_file(f)) == []


# ---------------------------------------------------------------- the rules file

def test_a_city_overrides_thresholds_by_domain_area_and_entity(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(
        "rules:\n  grid.overload: {threshold: 0.95}\n"
        "overrides:\n"
        "  - match: {entity: F-1}\n    rules: {grid.overload: {threshold: 0.9}}\n"
        "  - match: {district: 市南区}\n    rules: {grid.overload: {threshold: 0.8, severity: critical}}\n"
        "  - match: {domain: gate}\n    rules: {gate.crowd_surge: {enabled: false}}\n",
        encoding="utf-8")
    book = RuleBook.from_file(f)
    south = {"district": "市南区", "street": "s", "community": "c", "grid_cell": "g"}
    assert book.for_entity("grid", "F-2", {})["grid.overload"]["threshold"] == 0.95
    assert book.for_entity("grid", "F-2", south)["grid.overload"]["threshold"] == 0.8
    one = book.for_entity("grid", "F-1", south)["grid.overload"]
    assert (one["threshold"], one["severity"]) == (0.9, "critical")  # the entity is most specific
    assert book.for_entity("gate", "G-1", {})["gate.crowd_surge"]["enabled"] is False
    assert book.for_entity("gate", "G-1", {})["gate.fever"]["threshold"] == 37.3


@pytest.mark.parametrize("text, names", [
    ("rules:\n  grid.overlord: {threshold: 1}\n", "unknown rule 'grid.overlord'"),
    ("rules:\n  grid.overload: {treshold: 1}\n", "unknown parameter 'treshold'"),
    ("rules:\n  grid.overload: {threshold: high}\n", "grid.overload.threshold: expected a non-negative number"),
    ("rules:\n  gate.fever: {severity: urgent}\n", "'urgent' is not one of info, warning, minor, major, critical"),
    ("overrides:\n  - match: {city: x}\n    rules: {}\n", "overrides[0].match"),
    ("rules: [1, 2\n", "not valid YAML"),
])
def test_a_bad_rules_file_is_refused_with_the_place_named(tmp_path: Path, text: str, names: str) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError, match=None) as err:
        RuleBook.from_file(f)
    assert names in str(err.value) and str(f) in str(err.value)


# ---------------------------------------------------------------- exactly the same, however batched

def detections_of(records: list, sizes: list[int], registry) -> list[dict]:
    """Run a partition's records through the worker's processor in batches of `sizes`."""
    from streams.detectors import detector
    from streams.processor import PartitionProcessor

    from streams.state import PartitionState
    from streams.windows import SHAPES

    proc = PartitionProcessor("gate", "t.gate.events", 1, 60_000, 120_000, registry,
                              clock=lambda: 2e9, detector=detector("gate", RuleBook(), registry))
    state = PartitionState(SHAPES["gate"])
    out: list[dict] = []
    i = 0
    for size in sizes:
        step = proc.step(0, records[i:i + size], state)
        i += size
        out += [orjson.loads(doc) for _, doc in step.detections]
    assert i >= len(records)
    return sorted(out, key=lambda d: (d["rule"], d["entity"], d["episode"], d["seq"]))


def test_detections_do_not_depend_on_how_records_are_batched() -> None:
    """A replay after a crash cuts the same records into other batches: the detections
    (which the alert manager dedupes by episode and seq) must come out the same."""
    import random

    from services.simulator import generate
    from streams.processor import Record
    from streams.registry import Registry

    from benchmarks.rules import START

    city = City.sized_for(20, seed=5)
    rng = random.Random(5)
    events = []
    for tick in generate(city, START, 900, seed=5, anomaly_every_s=3.0, warmup_s=120):
        for e in tick.events["gate"]:
            if rng.random() < 0.2:  # some arrive out of order, a few seconds late
                e = {**e, "ts": (e["ts"] if isinstance(e["ts"], int) else
                                 int(datetime.fromisoformat(e["ts"]).timestamp() * 1000)) - rng.randint(1, 20_000)}
            events.append(e)
    records = [Record(0, n, e["gate_id"].encode(), orjson.dumps(e)) for n, e in enumerate(events)]
    registry = Registry(city.entities)
    whole = detections_of(records, [len(records)], registry)
    rules = {d["rule"] for d in whole}
    assert {"gate.offline", "gate.fever", "gate.denied_burst", "gate.crowd_surge"} <= rules
    for most in (5, 400):
        cuts = [rng.randint(1, most) for _ in range(len(records))]
        assert detections_of(records, cuts, registry) == whole
