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
from streams.rules import CATALOGUE, RuleBook, RulesError


@pytest.fixture(scope="module")
def city() -> City:
    return City.sized_for(100, seed=11)


def test_the_catalogue_is_the_contract_list() -> None:
    assert set(CATALOGUE) == {rule for rule, _ in KINDS} == {
        "gate.tailgating", "gate.fever", "gate.denied_burst", "gate.offline", "gate.crowd_surge",
        "traffic.congestion", "traffic.incident", "traffic.sensor_fault", "traffic.anomaly",
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
