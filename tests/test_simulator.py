"""The city simulator, without a broker: contract shapes, daily shapes, anomalies, batching."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

from services.city import City, _nearest, build_city
from services.simulator import ENTITY_FIELD, GUARD_S, KINDS, NO_BASELINE, Batcher, Simulator, generate
from streams.events import parse_ts
from streams.partitioning import partition_for
from streams.topics import DOMAINS

CST = timezone(timedelta(hours=8))
START = datetime(2026, 11, 21, 7, 30, tzinfo=CST)
RUN_S = 1800
RULES = {rule for rule, _ in KINDS}


@pytest.fixture(scope="module")
def city() -> City:
    return build_city(7, gates=40, sensors=40, feeders=20)


@pytest.fixture(scope="module")
def run(city: City) -> tuple[list[dict], list[dict]]:
    """A 30-minute fast run: every event, and the ground truth."""
    events, truth = [], []
    for tick in generate(city, START, RUN_S, seed=7):
        for domain in DOMAINS:
            events += tick.events[domain]
        truth += [a.truth() for a in tick.began]
    return events, truth


def entity_of(ev: dict) -> str:
    return ev[ENTITY_FIELD[ev["type"].partition(".")[0]]]


def epoch_ms(ts: int | str) -> int:
    if isinstance(ts, int):
        return ts
    parsed = datetime.fromisoformat(ts)
    assert parsed.utcoffset() == timedelta(hours=8), ts
    return round(parsed.timestamp() * 1000)


def minute_of(city: City, at: datetime, seconds: int = 60, **options) -> list[dict]:
    ticks = generate(city, at, seconds, anomaly_every_s=None, **options)
    return [ev for tick in ticks for d in DOMAINS for ev in tick.events[d]]


def test_same_seed_same_events_other_seed_other_events(city: City) -> None:
    def dump(seed: int) -> bytes:
        return orjson.dumps([tick.events for tick in generate(city, START, 120, seed=seed, warmup_s=0)])

    assert dump(7) == dump(7)
    assert dump(7) != dump(8)
    assert build_city(7, 5, 5, 5).entities == build_city(7, 5, 5, 5).entities


def test_registry_entities_follow_the_contract(city: City) -> None:
    ids = [e["id"] for e in city.entities]
    assert len(set(ids)) == len(ids) == 100
    for e in city.entities:
        assert e["id"][0] == {"gate": "G", "traffic": "T", "grid": "F"}[e["domain"]]
        assert all(isinstance(e[level], str) and e[level] for level in
                   ("name", "district", "street", "community", "grid_cell"))
        assert e["grid_cell"].startswith(e["community"]) and e["street"].endswith("街道")
        assert 36.0 <= e["lat"] <= 36.4 and 120.1 <= e["lon"] <= 120.6
        extra = set(e) - {"id", "domain", "name", "district", "street", "community", "grid_cell", "lat", "lon"}
        assert extra == {"gate": {"feeder"}, "traffic": {"free_flow_kmh", "feeder"},
                         "grid": {"rated_kw", "nominal_kv"}}[e["domain"]]
    assert all(f["nominal_kv"] == 10.0 and f["rated_kw"] > 0 for f in city.feeders)
    assert len({e["district"] for e in City.sized_for(1000).entities}) == 7


def test_every_event_matches_the_contract(run: tuple[list[dict], list[dict]]) -> None:
    events, _ = run
    lo, hi = int(START.timestamp() * 1000), int((START + timedelta(seconds=RUN_S)).timestamp() * 1000)
    forms = defaultdict(set)
    for ev in events:
        assert lo <= epoch_ms(ev["ts"]) < hi
        forms[ev["type"]].add(type(ev["ts"]))
        kind = ev["type"]
        if kind == "gate.pass":
            assert set(ev) - {"temperature_c", "tailgate"} == {
                "type", "ts", "gate_id", "direction", "method", "result", "subject"}
            assert ev["direction"] in ("in", "out") and ev["result"] in ("granted", "denied")
            assert ev["method"] in ("face", "qr", "card", "plate", "password")
            assert isinstance(ev["subject"], str) and ev["subject"]
            assert isinstance(ev.get("temperature_c", 36.6), float)
            assert isinstance(ev.get("tailgate", False), bool)
        elif kind == "gate.heartbeat":
            assert set(ev) == {"type", "ts", "gate_id"}
        elif kind == "traffic.flow":
            assert set(ev) == {"type", "ts", "sensor_id", "interval_s", "volume", "speed_kmh", "occupancy"}
            assert ev["interval_s"] == 60 and isinstance(ev["volume"], int) and ev["volume"] >= 0
            assert isinstance(ev["speed_kmh"], float) and ev["speed_kmh"] >= 0
            assert isinstance(ev["occupancy"], float) and 0 <= ev["occupancy"] <= 1
        else:
            assert kind == "grid.measurement"
            assert set(ev) - {"power_factor"} == {
                "type", "ts", "feeder_id", "load_kw", "voltage_kv", "frequency_hz", "breaker"}
            assert ev["breaker"] in ("closed", "open") and ev["load_kw"] >= 0
            assert all(isinstance(ev[k], float) for k in ("load_kw", "voltage_kv", "frequency_hz"))
    assert all(f == {int, str} for f in forms.values()), forms  # both timestamp forms, every type


def test_the_day_has_its_shape(city: City) -> None:
    def at(hour: float) -> list[dict]:
        return minute_of(city, datetime(2026, 11, 21, tzinfo=CST) + timedelta(hours=hour))

    def mean(events: list[dict], kind: str, key: str) -> float:
        values = [ev[key] for ev in events if ev["type"] == kind]
        return sum(values) / len(values)

    night, rush, evening = at(3), at(8), at(19.5)
    assert mean(rush, "traffic.flow", "speed_kmh") < 0.7 * mean(night, "traffic.flow", "speed_kmh")
    assert mean(rush, "traffic.flow", "occupancy") > 3 * mean(night, "traffic.flow", "occupancy")
    assert mean(evening, "grid.measurement", "load_kw") > 1.5 * mean(night, "grid.measurement", "load_kw")

    def passes(events: list[dict], direction: str) -> int:
        return sum(ev["type"] == "gate.pass" and ev["direction"] == direction for ev in events)

    assert passes(rush, "out") > 2 * passes(rush, "in")
    assert passes(at(18.5), "in") > 2 * passes(at(18.5), "out")
    assert passes(night, "in") + passes(night, "out") < (passes(rush, "in") + passes(rush, "out")) / 5


def test_normal_telemetry_stays_within_normal_ranges(city: City) -> None:
    rated = {f["id"]: f["rated_kw"] for f in city.feeders}
    free_flow = {s["id"]: s["free_flow_kmh"] for s in city.sensors}
    for hour in (3, 8, 12, 18, 19.5):
        for ev in minute_of(city, datetime(2026, 11, 21, tzinfo=CST) + timedelta(hours=hour)):
            if ev["type"] == "grid.measurement":
                assert 0.3 < ev["load_kw"] / rated[ev["feeder_id"]] < 0.9
                assert abs(ev["voltage_kv"] - 10) <= 0.2 and abs(ev["frequency_hz"] - 50) <= 0.05
                assert ev["breaker"] == "closed"
            elif ev["type"] == "traffic.flow":
                assert ev["speed_kmh"] >= 0.4 * free_flow[ev["sensor_id"]] and ev["occupancy"] <= 0.42
            elif ev["type"] == "gate.pass":
                assert 36.2 <= ev.get("temperature_c", 36.6) <= 37.0 and not ev.get("tailgate")


def test_the_rate_is_steady_when_asked(city: City) -> None:
    big = City.sized_for(300)
    assert big.periodic_events_per_s() == pytest.approx(0.735 * 300, rel=0.02)  # see City.sized_for
    for hour in (3, 8, 19):
        at = datetime(2026, 11, 21, hour, tzinfo=CST)
        assert len(minute_of(big, at, steady_rate=300)) == pytest.approx(60 * 300, rel=0.05)


def test_every_gate_and_detector_draws_power_from_a_feeder_of_its_district(city: City) -> None:
    feeders = {f["id"]: f for f in city.feeders}
    for e in city.gates + city.sensors:
        assert feeders[e["feeder"]]["district"] == e["district"]


@pytest.mark.parametrize("sites", [1, 7, 300])
def test_the_feeder_found_is_the_nearest_as_comparing_every_pair_finds_it(sites: int) -> None:
    """The grid search of `_nearest` against the plain comparison: clustered sites, sites
    on one spot (ties go to the lower index) and points far outside every cell."""
    rng = np.random.default_rng(sites)
    where = np.round(rng.normal(0, 0.01, (sites, 2)) + rng.integers(0, 3, (sites, 1)) * 0.05, 3)
    where[len(where) // 2:][:2] = where[0]
    points = np.vstack([rng.normal(0, 0.05, (3000, 2)), [[5.0, 5.0], [-3.0, 0.1]]])
    plain = [int(np.argmin(((where - p) ** 2).sum(axis=1))) for p in points]
    assert _nearest(points, where).tolist() == plain



def test_a_feeder_outage_takes_the_gates_and_detectors_it_powers_offline_in_the_ground_truth(
        city: City, run: tuple[list[dict], list[dict]]) -> None:
    events, truth = run
    devices = {"gate": city.gates, "traffic": city.sensors}
    first_ms = truth[0]["start_ms"]
    outages = [t for t in truth if t["rule"] == "grid.outage" and t["start_ms"] >= first_ms + 60_000]
    assert outages  # a device never heard from can't be missed: none in the first minute
    for domain, field in (("gate", "gate_id"), ("traffic", "sensor_id")):
        powered = {f["id"]: {d["id"] for d in devices[domain] if d["feeder"] == f["id"]} for f in city.feeders}
        went_dark = 0
        for o in outages:
            dark = {t["entity"] for t in truth if t["rule"] == f"{domain}.offline" and t["start_ms"] == o["start_ms"]}
            assert dark <= powered[o["entity"]]
            went_dark += len(dark)
            heard = {ev[field] for ev in events if ev.get(field) in dark
                     and o["start_ms"] <= parse_ts(ev["ts"]) < o["end_ms"]}
            assert heard == set()
        assert went_dark, domain


def test_every_rule_is_injected_with_its_ground_truth(city: City, run: tuple[list[dict], list[dict]]) -> None:
    _, truth = run
    assert {t["rule"] for t in truth} == RULES
    for t in truth:
        assert t["domain"] == t["rule"].partition(".")[0] == city.by_id[t["entity"]]["domain"]
        assert t["start_ms"] < t["end_ms"]
        for edge in ("start", "end"):
            assert datetime.fromisoformat(t[edge]).timestamp() * 1000 == t[f"{edge}_ms"]
            assert t[edge].endswith("Z")
        assert START.timestamp() * 1000 <= t["start_ms"] and t["end_ms"] <= (START.timestamp() + RUN_S) * 1000


def test_faults_needing_no_baseline_show_from_the_first_second_the_others_after_the_warmup(
        run: tuple[list[dict], list[dict]]) -> None:
    _, truth = run
    start_ms, learned_ms = START.timestamp() * 1000, (START.timestamp() + 300) * 1000  # the default warm-up
    assert truth[0]["start_ms"] == start_ms  # a new user's first minute shows the product
    outages = {t["start_ms"] for t in truth if t["rule"] == "grid.outage"}
    # Devices a feeder's outage takes down go offline with it, whenever it is.
    truth = [t for t in truth if not (t["rule"].endswith(".offline") and t["start_ms"] in outages)]
    early = [t for t in truth if t["start_ms"] < learned_ms]
    assert {t["rule"] for t in early} == NO_BASELINE
    assert {t["rule"] for t in truth if t["start_ms"] < start_ms + 180_000} == NO_BASELINE


def test_anomalies_never_overlap_on_one_entity(run: tuple[list[dict], list[dict]]) -> None:
    _, truth = run
    windows = defaultdict(list)
    for t in truth:
        windows[t["entity"]].append((t["start_ms"], t["end_ms"]))
    for spans in windows.values():
        spans.sort()
        assert all(end < next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


def test_each_anomaly_shows_in_its_events(city: City, run: tuple[list[dict], list[dict]]) -> None:
    """What a detector of each rule would look for is there, inside the labelled window."""
    events, truth = run
    by_entity = defaultdict(list)
    for ev in events:
        by_entity[entity_of(ev)].append(ev)

    for t in truth:
        entity = city.by_id[t["entity"]]
        inside = [ev for ev in by_entity[t["entity"]] if t["start_ms"] <= epoch_ms(ev["ts"]) < t["end_ms"]]
        before = [ev for ev in by_entity[t["entity"]] if epoch_ms(ev["ts"]) < t["start_ms"]]
        rule = t["rule"]
        if rule.endswith(".offline"):
            assert not inside
            continue
        if rule == "gate.tailgating":
            assert sum(ev.get("tailgate") is True for ev in inside) >= 2
        elif rule == "gate.fever":
            assert any(ev.get("temperature_c", 0) >= 37.3 for ev in inside)
        elif rule == "gate.denied_burst":
            denied = [ev["subject"] for ev in inside if ev.get("result") == "denied"]
            assert max(denied.count(s) for s in denied) >= 8
            assert t["end_ms"] - t["start_ms"] <= 120_000
        elif rule == "gate.crowd_surge":
            def per_s(evs: list[dict], seconds: float) -> float:
                return sum(ev["type"] == "gate.pass" for ev in evs) / seconds

            normal = per_s(before, t["start_ms"] / 1000 - START.timestamp())
            assert t["end_ms"] - t["start_ms"] >= 600_000
            assert per_s(inside, 600) >= 4 * normal
        elif rule == "traffic.congestion":
            jam = [ev for ev in inside
                   if ev["speed_kmh"] < 0.3 * entity["free_flow_kmh"] and ev["occupancy"] > 0.5]
            assert len(jam) >= 5 and len(jam) == len(inside)
        elif rule == "traffic.incident":
            assert inside and all(ev["speed_kmh"] < 10 and ev["occupancy"] > 0.6 for ev in inside)
            assert before[-1]["speed_kmh"] > 0.4 * entity["free_flow_kmh"]
        elif rule == "traffic.sensor_fault":
            readings = {(ev["volume"], ev["speed_kmh"], ev["occupancy"]) for ev in inside}
            assert len(inside) >= 10
            assert len(readings) == 1 or all(ev["speed_kmh"] >= 250 for ev in inside)
        elif rule == "traffic.anomaly":
            normal = sorted(ev["volume"] for ev in before[-10:])[len(before[-10:]) // 2]
            assert all(ev["volume"] >= 3 * normal for ev in inside) and len(inside) >= 14
            assert all(ev["speed_kmh"] >= 0.4 * entity["free_flow_kmh"] for ev in inside)
        elif rule == "grid.overload":
            assert all(1.05 <= ev["load_kw"] / entity["rated_kw"] <= 1.35 for ev in inside)
            assert len(inside) >= 30  # 5 minutes of 10 s measurements
        elif rule == "grid.voltage":
            assert all(abs(ev["voltage_kv"] / entity["nominal_kv"] - 1) > 0.07 for ev in inside)
            assert len(inside) >= 12
        elif rule == "grid.frequency":
            assert all(abs(ev["frequency_hz"] - 50) > 0.2 for ev in inside) and len(inside) >= 6
        elif rule == "grid.outage":
            assert all(ev["breaker"] == "open" and ev["voltage_kv"] < 0.5 and ev["load_kw"] == 0 for ev in inside)
        else:
            assert rule == "grid.load_anomaly"
            normal = sum(ev["load_kw"] for ev in before[-6:]) / 6
            assert all(ev["load_kw"] < entity["rated_kw"] for ev in inside)
            assert all(ev["load_kw"] > 1.4 * normal or ev["load_kw"] < 0.3 * normal for ev in inside)
        assert inside, rule


def test_batches_hold_one_partition_each(run: tuple[list[dict], list[dict]]) -> None:
    events, _ = run
    batcher = Batcher(25, {d: 8 for d in DOMAINS})
    records = []
    for domain in DOMAINS:
        records += batcher.add(domain, [ev for ev in events if ev["type"].startswith(domain + ".")])
    records += batcher.drain()
    assert sum(len(r.value["events"]) for r in records) == len(events)
    for r in records:
        assert 1 <= len(r.value["events"]) <= 25
        assert r.key == entity_of(r.value["events"][0])
        assert {partition_for(entity_of(ev), 8) for ev in r.value["events"]} == {r.partition}

    grid = [ev for ev in events if ev["type"] == "grid.measurement"][:5]
    singles = list(Batcher(1, {d: 8 for d in DOMAINS}).add("grid", grid))
    assert [(r.key, r.value, r.partition) for r in singles] == [
        (ev["feeder_id"], ev, partition_for(ev["feeder_id"], 8)) for ev in grid]


def test_a_tiny_city_reuses_a_device_only_after_a_quiet_spell() -> None:
    tiny = build_city(3, gates=1, sensors=1, feeders=1)
    sim = Simulator(tiny, 0, 7200, warmup_s=0)
    episodes = defaultdict(list)
    for t in range(7200):
        for a in sim.tick(t).began:
            episodes[a.entity].append(a)
    assert set(episodes) == {"G-0001", "T-0001", "F-0001"}
    for spans in episodes.values():
        assert all(b.start_s >= a.end_s + GUARD_S for a, b in zip(spans, spans[1:]))
