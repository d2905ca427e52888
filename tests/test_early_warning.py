"""Early warning of an overload (streams/early_warning.py), broker-free: the closed windows
a worker publishes in, `grid.overload_forecast` detections out."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from services.simulator import gate_activity, grid_load, traffic_demand
from streams.alerting import Policy, apply
from streams.early_warning import WATCHES, EarlyWarning, decode, encode
from streams.processor import PartitionProcessor, Record, iso
from streams.registry import Registry
from streams.rules import RuleBook
from streams.state import PartitionState
from streams.windows import SHAPES

MIN_MS = 60_000
DAY = 1440
T0 = 1_793_462_400_000  # 2026-11-01T00:00+08:00: local midnight, so grid_load's hours are local
RAMP_FROM = 2 * DAY + 10 * 60  # day three, 10:00: a ramp to 1.2 × rated over 60 minutes
MINUTES = 2 * DAY + 14 * 60
FEEDERS = [{"id": "F-RAMP", "domain": "grid", "rated_kw": 1000.0, "district": "市南区"},
           {"id": "F-FLAT", "domain": "grid", "rated_kw": 1000.0, "district": "市南区"}]


def loads() -> dict[str, np.ndarray]:
    """Two days and a morning of one reading a minute (kW): the simulator's daily load with
    1 % noise; one feeder ramps past its rating on day three."""
    rng = np.random.default_rng(3)
    normal = 1000 * np.array([grid_load((m / 60) % 24) for m in range(MINUTES)])
    ramp = normal * (1 + rng.normal(0, 0.01, normal.size))
    ramp[RAMP_FROM:RAMP_FROM + 60] = np.linspace(ramp[RAMP_FROM], 1200, 60)
    ramp[RAMP_FROM + 60:] = 1200
    return {"F-RAMP": ramp, "F-FLAT": normal * (1 + rng.normal(0, 0.01, normal.size))}


def window_records(series: dict[str, np.ndarray], domain: str = "grid", field: str = "load_kw",
                   counter: bool = False) -> list[Record]:
    """The closed windows' records of a partition with one reading per entity and minute
    (or, with `counter`, a count per entity and minute), as the worker writes them (a live
    record between them, which is not read)."""
    out: list[Record] = []
    ids = list(series)
    for m in range(len(next(iter(series.values())))):
        ws = T0 + m * MIN_MS
        values = np.array([series[e][m] for e in ids])
        cols = {"n": [1] * len(ids), "f": {field: {"count": [1] * len(ids), "sum": values.tolist(),
                                                       "m2": [0.0] * len(ids), "min": values.tolist(),
                                                       "max": values.tolist()}}}
        if counter:
            cols = {"n": values.astype(int).tolist(), "f": {}, "c": {field: values.astype(int).tolist()}}
        head = {"domain": domain, "partition": 0, "window_start": ws, "window_end": ws + MIN_MS}
        out.append(Record(0, len(out), f"{domain}/0|{ws}|live/{m}/0".encode(),
                          orjson.dumps({**head, "closed": False, "entities": ids, "cols": cols})))
        out.append(Record(0, len(out), f"{domain}/0|{ws}|closed/0".encode(),
                          orjson.dumps({**head, "closed": True, "entities": ids, "cols": cols})))
    return out


RECORDS = window_records(loads())
DAY_TWO_ENDS = 2 * 2 * DAY  # two records a minute


@pytest.fixture(scope="module")
def learnt() -> list[bytes]:
    """The state after two normal days (stored, so each test starts from a copy)."""
    rule = warning_rule()
    state = rule.new()
    assert rule.step(state, RECORDS[:DAY_TWO_ENDS]).detections == []
    return encode(state)


def warning_rule() -> EarlyWarning:
    return EarlyWarning(RuleBook(), Registry(FEEDERS), MIN_MS)


def run(learnt: list[bytes], records: list[Record], cut: int = 50) -> list[dict[str, Any]]:
    """Day three's detections, its records handed over `cut` at a time."""
    rule, state = warning_rule(), decode(learnt, MIN_MS)
    out = []
    for at in range(DAY_TWO_ENDS, len(records), cut):
        out += [orjson.loads(doc) for _, doc in rule.step(state, records[at:at + cut]).detections]
    return out


def test_a_ramping_feeder_is_warned_before_its_load_passes_the_rating_and_a_normal_one_never(
        learnt: list[bytes]) -> None:
    found = run(learnt, RECORDS)
    assert {d["entity"] for d in found} == {"F-RAMP"}
    first = found[0]
    assert first["rule"] == "grid.overload_forecast" and first["status"] == "firing"
    passes_ms = T0 + (RAMP_FROM + int(np.argmax(loads()["F-RAMP"][RAMP_FROM:] > 1000))) * MIN_MS
    lead_min = (passes_ms - first["ts"]) / MIN_MS
    assert lead_min >= 10, lead_min
    fc = first["forecast"]
    # the alert says when, and how sure: the peak's interval lies above the rating
    assert fc["crosses_in_s"] > 0 and fc["low"] > 1.0 and fc["low"] < fc["value"] < fc["high"]
    assert first["value"] == fc["value"] and first["threshold"] == 1.0
    assert "expected to cross it in" in first["summary"] and first["area"]["district"] == "市南区"
    assert all(d["severity"] == "warning" for d in found)
    # Once the load is over its rating, each report links the warning to what it warned of.
    came_true = iso(passes_ms)
    assert fc["warns_of"] == "grid.overload" and fc["came_true_at"] is None
    assert {d["forecast"]["came_true_at"] for d in found if d["ts"] > passes_ms} == {came_true}
    assert {d["forecast"]["came_true_at"] for d in found if d["ts"] <= passes_ms} == {None}


def test_the_forecast_never_looks_ahead(learnt: list[bytes]) -> None:
    """Rewriting the future (the ramp stops half way) leaves every earlier detection as it
    was, the records handed over in one batch."""
    calm = loads()
    calm["F-RAMP"][RAMP_FROM + 30:] = calm["F-FLAT"][RAMP_FROM + 30:]
    cut_ms = T0 + (RAMP_FROM + 30) * MIN_MS
    before = [d for d in run(learnt, RECORDS, cut=len(RECORDS)) if d["ts"] < cut_ms]
    assert before and before == [d for d in run(learnt, window_records(calm), cut=len(RECORDS)) if d["ts"] < cut_ms]


def test_a_replay_from_a_snapshot_decides_as_the_first_run(learnt: list[bytes]) -> None:
    """A crash after a snapshot: the next owner loads it and reads again from an earlier
    offset (the commit lags the snapshot), cut into other batches. The topic also holds
    closed windows twice (a domain worker's own replay sends them again): they are
    neither learnt nor reported twice."""
    ramp_at = 2 * RAMP_FROM
    resent = [r for r in RECORDS[ramp_at - 10:ramp_at + 10] if b"closed" in r.key]
    topic = [Record(0, i, r.key, r.value) for i, r in enumerate(RECORDS[:ramp_at + 20] + resent + RECORDS[ramp_at + 20:])]
    first = run(learnt, topic, cut=7)
    assert first == run(learnt, RECORDS)

    rule, state = warning_rule(), decode(learnt, MIN_MS)
    snap_at = ramp_at + 90  # 45 minutes into the ramp, which is warned of by then
    before = [orjson.loads(doc) for _, doc in rule.step(state, topic[DAY_TWO_ENDS:snap_at]).detections]
    replayed, after = decode(encode(state), MIN_MS), []
    again = topic[snap_at - 40:]
    for at in range(0, len(again), 13):
        after += [orjson.loads(doc) for _, doc in rule.step(replayed, again[at:at + 13]).detections]
    assert before and after and before + after == first


def test_the_closed_windows_a_grid_worker_publishes_are_learnt() -> None:
    """The records of the real processor (not the hand-made ones above), live ones skipped."""
    registry = Registry(FEEDERS)
    processor = PartitionProcessor("grid", "grid.events", 1, MIN_MS, 120_000, registry)
    state = PartitionState(SHAPES["grid"])
    events = [Record(0, m, b"F-FLAT", orjson.dumps({
        "type": "grid.measurement", "ts": T0 + m * 10_000, "feeder_id": "F-FLAT", "load_kw": 500.0 + m,
        "voltage_kv": 10.0, "frequency_hz": 50.0, "breaker": "closed"})) for m in range(6 * 20)]
    step = processor.step(0, events, state)
    live = processor.live_records(0, state, max(state.windows), processor.open_touched(state)[max(state.windows)])
    published = [Record(0, i, key, doc) for i, (kind, key, doc) in enumerate(step.closed + live)
                 if kind == "aggregates"]
    rule = warning_rule()
    warnings = rule.new()
    rule.step(warnings, published)
    closed = sum(orjson.loads(r.value)["closed"] for r in published)
    model = warnings.models["smooth"]
    assert closed == 17 and model.state["seen"].tolist() == [closed]
    assert model.state["level"][0] == pytest.approx(500 + 2.5)  # the first window's mean


def test_the_alert_carries_the_forecast_and_resolves_when_it_clears(learnt: list[bytes]) -> None:
    calm = loads()
    calm["F-RAMP"][RAMP_FROM + 30:] = calm["F-FLAT"][RAMP_FROM + 30:]  # warned of, then turns back before rated
    state, alert = None, None
    found = run(learnt, window_records(calm))
    for doc in found:
        state, changed = apply(state, doc, Policy())
        alert = changed or alert
        if doc["seq"] == 1:
            assert alert["forecast"] == doc["forecast"] and alert["forecast"]["crosses_at"] is not None
    assert found[-1]["status"] == "resolved" and alert["status"] == "resolved"
    assert alert["forecast"]["crosses_at"] is None and "no longer expected" in alert["history"][-1]["note"] + found[-1]["summary"]


def test_a_rule_turned_off_learns_nothing_and_warns_nobody() -> None:
    """The rules file turns a rule off per entity, area or city; the catalogue has the
    roads' warning off until a city turns it on."""
    book = RuleBook({"grid.overload_forecast": {"enabled": False}})
    rule = EarlyWarning(book, Registry(FEEDERS), MIN_MS)
    state = rule.new()
    assert rule.step(state, RECORDS).detections == []
    assert state.models == {} and state.series == {}


def test_a_road_slowing_towards_congestion_is_warned_of_where_the_city_turns_the_rule_on() -> None:
    rng = np.random.default_rng(4)
    speed = 60 * (1 - 0.5 * np.array([traffic_demand((m / 60) % 24) for m in range(MINUTES)]) ** 2)
    slowing = speed * (1 + rng.normal(0, 0.01, MINUTES))
    slowing[RAMP_FROM:RAMP_FROM + 60] = np.linspace(slowing[RAMP_FROM], 9, 60)
    slowing[RAMP_FROM + 60:] = 9
    road = {"id": "T-0001", "domain": "traffic", "free_flow_kmh": 60.0}
    rule = EarlyWarning(RuleBook({"traffic.congestion_forecast": {"enabled": True}}), Registry([road]), MIN_MS)
    found = [orjson.loads(doc) for _, doc in rule.step(
        rule.new(), window_records({"T-0001": slowing}, "traffic", "speed_kmh")).detections]
    first = found[0]
    crosses_ms = T0 + (RAMP_FROM + int(np.argmax(slowing[RAMP_FROM:] < 0.3 * 60))) * MIN_MS
    assert first["rule"] == "traffic.congestion_forecast" and first["status"] == "firing"
    assert (crosses_ms - first["ts"]) / MIN_MS >= 5
    assert first["value"] < first["threshold"] == 0.3 and first["forecast"]["high"] < 0.3


def test_a_rule_an_override_turns_on_for_one_district_warns_there() -> None:
    """A rule off in the catalogue but on for one area is still read and judged there."""
    book = RuleBook(overrides=[("district", "市南区", {"grid.overload_forecast": {"enabled": True}})],
                    rules={"grid.overload_forecast": {"enabled": False}})
    assert book.ever_enabled("grid.overload_forecast") and not RuleBook().ever_enabled("traffic.congestion_forecast")
    rule = EarlyWarning(book, Registry(FEEDERS), MIN_MS)
    found = [orjson.loads(doc) for _, doc in rule.step(rule.new(), RECORDS).detections]
    assert found and {d["entity"] for d in found} == {"F-RAMP"}


GATES = [{"id": "G-CAP", "domain": "gate", "capacity_per_min": 30, "district": "市南区"},
         {"id": "G-NONE", "domain": "gate", "district": "市南区"}]


def gate_passes() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rate and the passes a minute (Poisson) of two gates: the simulator's daily rhythm
    peaking at 12 a minute; on day three at 10:00 a crowd builds to 40 a minute over an hour."""
    rng = np.random.default_rng(5)
    shape = np.array([gate_activity((m / 60) % 24) for m in range(MINUTES)])
    rate = 12 * shape / shape.max()
    rate[RAMP_FROM:RAMP_FROM + 60] = np.linspace(rate[RAMP_FROM], 40, 60)
    rate[RAMP_FROM + 60:] = 40
    return rate, {g["id"]: rng.poisson(rate).astype(float) for g in GATES}


def test_a_crowd_building_towards_a_gates_capacity_is_warned_of_and_a_gate_without_one_is_not_watched() -> None:
    rate, passes = gate_passes()
    rule = EarlyWarning(RuleBook(), Registry(GATES), MIN_MS)
    state = rule.new()
    found = [orjson.loads(doc) for _, doc in rule.step(state, window_records(passes, "gate", "passes", True)).detections]
    assert {d["entity"] for d in found} == {"G-CAP"} and state.series["counts"].ids == ["gate.crowd_forecast|G-CAP"]
    first = found[0]
    assert first["rule"] == "gate.crowd_forecast" and first["status"] == "firing" and first["threshold"] == 1.0
    at_capacity_ms = T0 + (RAMP_FROM + int(np.argmax(rate[RAMP_FROM:] > 30))) * MIN_MS
    assert (at_capacity_ms - first["ts"]) / MIN_MS >= 5
    fc = first["forecast"]
    assert fc["coverage"] == 0.5 and fc["low"] > 1.0
    assert "of the gate's capacity" in first["summary"] and "50 % interval" in first["summary"]
    # no rule judges passes against capacity: the warning names none, and says when it came true
    past = T0 + (RAMP_FROM + int(np.argmax(passes["G-CAP"][RAMP_FROM:] > 30))) * MIN_MS
    assert {d["forecast"]["warns_of"] for d in found} == {None}
    assert {d["forecast"]["came_true_at"] for d in found if d["ts"] > past} == {iso(past)}


def test_a_gates_capacity_a_minute_is_scaled_to_the_window() -> None:
    """A capacity is per minute; a window of two minutes holds twice the passes."""
    watch = WATCHES["gate"]
    assert watch.per_window(120_000) == 2.0 and WATCHES["grid"].per_window(120_000) == 1.0
    assert watch.values({"c": {"passes": [60, 0]}}, 2).tolist() == [60.0, 0.0]


def test_a_city_whose_gates_have_no_capacity_watches_none_and_still_forecasts_their_passes() -> None:
    _, passes = gate_passes()
    rule = EarlyWarning(RuleBook(), Registry(GATES[1:]), MIN_MS)
    state = rule.new()
    applied = rule.step(state, window_records(passes, "gate", "passes", True))
    assert state.models == {} and not state.rules and applied.detections == []
    assert state.ahead.domains["gate"].series.ids == ["passes|G-CAP", "passes|G-NONE"] and applied.forecasts


def test_a_state_stored_before_the_gates_were_watched_is_read() -> None:
    """Layout 1 held one model of every series: it is read as the smooth kind's."""
    rule = warning_rule()
    state = rule.new()
    rule.step(state, RECORDS[:400])
    model, series = state.models["smooth"], state.series["smooth"]
    header = orjson.dumps({"layout": 1, "offset": state.offset, "series": series.ids, "rules": state.rules})
    old = decode([len(header).to_bytes(8, "big") + header + model.encode()], MIN_MS)
    state.ahead = old.ahead  # layout 1 had none: it starts anew
    assert old.series["smooth"].ids == series.ids and encode(old) == encode(state)


def test_a_warning_whose_feeder_loses_its_rating_or_rule_resolves_rather_than_firing_for_good(
        learnt: list[bytes]) -> None:
    """The registry may lose a rating (or not have caught up yet), a restart may turn the
    rule off: such a feeder is not learnt or judged any more, but a warning already firing
    is judged on against no limit, so it resolves after clear_s, also when no feeder of
    the domain has a rating or the rule is off for every one."""
    unrated = [{k: v for k, v in f.items() if k != "rated_kw"} for f in FEEDERS]
    off = {"grid.overload_forecast": {"enabled": False}}
    for book, registry in ((RuleBook(), Registry([unrated[0], FEEDERS[1]])), (RuleBook(), Registry(unrated)),
                           (RuleBook(off), Registry(FEEDERS)),
                           (RuleBook(overrides=[("entity", "F-RAMP", off)]), Registry(FEEDERS))):
        rule, state = warning_rule(), decode(learnt, MIN_MS)
        ramp_at = 2 * RAMP_FROM + 100  # 50 minutes into the ramp: warned of
        found = [orjson.loads(doc) for _, doc in rule.step(state, RECORDS[DAY_TWO_ENDS:ramp_at]).detections]
        assert found[-1]["status"] == "firing" and "grid.overload_forecast|F-RAMP" in state.rules
        after = [orjson.loads(doc) for _, doc in
                 EarlyWarning(book, registry, MIN_MS).step(state, RECORDS[ramp_at:]).detections]
        assert after and after[-1]["status"] == "resolved" and after[-1]["entity"] == "F-RAMP"
        assert (after[-1]["ts"] - found[-1]["ts"]) / MIN_MS <= 10 and not state.rules
        assert "no longer judged" in after[-1]["summary"] and "nan" not in orjson.dumps(after).decode()


def test_the_closed_windows_a_gate_worker_publishes_are_learnt_as_passes() -> None:
    """The real processor's gate windows: heartbeats count as events, not as passes."""
    processor = PartitionProcessor("gate", "gate.events", 1, MIN_MS, 120_000, Registry(GATES))
    state = PartitionState(SHAPES["gate"])
    events = [Record(0, m, b"G-CAP", orjson.dumps(
        {"type": "gate.heartbeat", "ts": T0 + m * 10_000, "gate_id": "G-CAP"} if m % 3 == 0 else
        {"type": "gate.pass", "ts": T0 + m * 10_000, "gate_id": "G-CAP", "direction": "in", "method": "face",
         "result": "granted", "subject": "resident"})) for m in range(6 * 20)]
    step = processor.step(0, events, state)
    published = [Record(0, i, key, doc) for i, (kind, key, doc) in enumerate(step.closed) if kind == "aggregates"]
    rule = EarlyWarning(RuleBook(), Registry(GATES), MIN_MS)
    warnings = rule.new()
    rule.step(warnings, published)
    model = warnings.models["counts"]
    assert model.state["seen"].tolist() == [17] and model.state["level"][0] == 4.0  # 4 passes a minute


def test_a_registry_that_gains_a_gates_capacity_starts_watching_it_and_both_kinds_of_model_are_stored() -> None:
    _, passes = gate_passes()
    registry = Registry(FEEDERS + GATES[1:])
    rule = EarlyWarning(RuleBook(), registry, MIN_MS)
    state = rule.new()
    gates = window_records({"G-CAP": passes["G-CAP"][:120]}, "gate", "passes", True)
    feeders = window_records({f: v[:120] for f, v in loads().items()})
    rule.step(state, gates[:60])
    assert state.models == {}  # no gate has a capacity: none watched
    registry.put(GATES[0])
    rule.step(state, [Record(0, len(gates) + i, r.key, r.value) for i, r in enumerate(gates[60:] + feeders)])
    assert set(state.models) == {"counts", "smooth"} and state.series["counts"].ids == ["gate.crowd_forecast|G-CAP"]
    again = decode(encode(state), MIN_MS)
    assert encode(again) == encode(state) and again.series["smooth"].ids == state.series["smooth"].ids
    assert again.models["counts"].config.coverage == 0.5 and again.models["smooth"].config.coverage == 0.8
