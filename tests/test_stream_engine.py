"""The stream engine on the real broker: every window equals a plain-Python reference,
with out-of-order and late events, single and batch records, crashes and rebalances; and
crashes change no alert."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from typing import Any, Callable

import orjson
import pytest

from aiokafka import TopicPartition

from services.config import Settings
from streams.events import ENTITY_FIELD
from streams.partitioning import partition_for
from streams.topics import DOMAINS
from streams.watermarks import uncommitted
from tests.conftest import Api, Proc, produce, read_all, vitals_totals, wait_for
from tests.reference import assert_matches, reference_windows

W, LATENESS = 60_000, 120_000
T0 = 1_795_219_200_000  # 2026-11-21T00:00:00Z
PREFIX = {"gate": "G", "traffic": "T", "grid": "F"}


def generate(n: int, seed: int, entities: int = 12, delay_s: float = 240.0) -> list[dict[str, Any]]:
    """Events over ~15 minutes of event time, arriving out of order: a third of them are
    delayed by up to `delay_s`, which makes a few later than the allowed lateness."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + i * (15 * W) // n + rnd.randrange(1000)
        domain = rnd.choice(["gate", "traffic", "grid"])
        eid = f"{PREFIX[domain]}-{rnd.randrange(entities):04d}"
        if domain == "gate":
            e = {"type": "gate.pass", "gate_id": eid, "direction": rnd.choice(["in", "out"]),
                 "method": "face", "result": rnd.choice(["granted"] * 5 + ["denied"]), "subject": f"s{i}",
                 "temperature_c": round(rnd.uniform(36.0, 38.0), 1), "tailgate": rnd.random() < 0.05}
        elif domain == "traffic":
            e = {"type": "traffic.flow", "sensor_id": eid, "interval_s": 60, "volume": rnd.randrange(40),
                 "speed_kmh": round(rnd.uniform(5, 80), 2), "occupancy": round(rnd.random(), 3)}
        else:
            e = {"type": "grid.measurement", "feeder_id": eid, "load_kw": round(rnd.uniform(100, 6000), 1),
                 "voltage_kv": round(rnd.uniform(9.6, 10.4), 3), "frequency_hz": round(rnd.uniform(49.95, 50.05), 3),
                 "breaker": rnd.choice(["closed"] * 19 + ["open"])}
        e["ts"] = ts if i % 2 else _rfc3339(ts)  # both contract forms
        out.append(e)
    arrival = [i * (15 * W) // n + (rnd.uniform(0, delay_s * 1000) if rnd.random() < 0.3 else 0)
               for i in range(n)]
    return [out[i] for i in sorted(range(n), key=arrival.__getitem__)]


def _rfc3339(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone(dt.timedelta(hours=8))).isoformat(timespec="milliseconds")


def domain_of(e: dict[str, Any]) -> str:
    return e["type"].split(".")[0]


def entity_of(e: dict[str, Any]) -> str:
    return e[ENTITY_FIELD[domain_of(e)]]


def expected(events: list[dict[str, Any]], partitions: int) -> tuple[dict, int]:
    """Reference windows, judging lateness per partition in arrival order, as Kafka does."""
    from streams.events import parse_ts

    streams: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for e in events:
        d = domain_of(e)
        streams[(d, partition_for(entity_of(e), partitions))].append(
            {**e, "ts": parse_ts(e["ts"]), "entity": entity_of(e)})
    out, on_time = {}, 0
    for (domain, _), evs in streams.items():
        for (entity, ws), doc in reference_windows(domain, evs, W, LATENESS).items():
            out[(domain, entity, ws)] = doc
            on_time += doc["events"]
    return out, len(events) - on_time


def records(events: list[dict[str, Any]], batch: int, partitions: int) -> dict[str, list]:
    """Per topic: single records keyed by entity, or batch records of one partition's
    events in arrival order, keyed by the first event's entity."""
    per_domain: dict[str, list] = defaultdict(list)
    if batch == 1:
        for e in events:
            per_domain[domain_of(e)].append((entity_of(e).encode(), orjson.dumps(e)))
        return per_domain
    groups: dict[tuple[str, int], list] = defaultdict(list)
    for e in events:
        key = (domain_of(e), partition_for(entity_of(e), partitions))
        groups[key].append(e)
        if len(groups[key]) == batch:
            per_domain[key[0]].append((entity_of(groups[key][0]).encode(), orjson.dumps({"events": groups.pop(key)})))
    for (domain, _), evs in groups.items():
        per_domain[domain].append((entity_of(evs[0]).encode(), orjson.dumps({"events": evs})))
    return per_domain


def expected_alerts(settings: Settings, per_domain: dict[str, list]) -> dict[str, dict]:
    """The alerts of an uninterrupted run: each partition's records through the worker's
    processor in one step, and each (rule, entity)'s detections through the alert manager."""
    from streams.alerting import Policy, apply
    from streams.detectors import detector
    from streams.processor import PartitionProcessor, Record
    from streams.registry import Registry
    from streams.state import PartitionState
    from streams.windows import SHAPES

    registry = Registry()
    inputs: dict[bytes, list] = defaultdict(list)
    for domain, recs in per_domain.items():
        by_partition: dict[int, list] = defaultdict(list)
        for key, value in recs:
            p = partition_for(key.decode(), settings.partitions)
            by_partition[p].append(Record(p, len(by_partition[p]), key, value))
        for p, partition_records in by_partition.items():
            proc = PartitionProcessor(domain, settings.topics.events(domain), settings.partitions, W, LATENESS,
                                      registry, detector=detector(domain, settings.rule_book(), registry))
            for key, doc in proc.step(p, partition_records, PartitionState(SHAPES[domain])).detections:
                inputs[key].append(orjson.loads(doc))
    policy = Policy(settings.alert_flap_s, settings.alert_escalate_s)
    alerts = {}
    for docs in inputs.values():
        state = None
        for doc in docs:
            state, alert = apply(state, doc, policy)
            if alert is not None:
                alerts[alert["id"]] = orjson.loads(orjson.dumps(alert))
    return alerts


def alerts_diff(got: dict[str, dict], want: dict[str, dict]) -> str:
    """For a person: the alerts missing, extra, and the fields that differ (first five)."""
    differ = {i: {k: (got[i].get(k), want[i].get(k)) for k in want[i] if got[i].get(k) != want[i].get(k)}
              for i in sorted(got.keys() & want.keys()) if got[i] != want[i]}
    return (f"missing {[(want[i]['rule'], want[i]['entity']) for i in sorted(want.keys() - got.keys())][:5]}, "
            f"extra {[(got[i]['rule'], got[i]['entity']) for i in sorted(got.keys() - want.keys())][:5]}, "
            f"{len(differ)} differ: {dict(list(differ.items())[:5])}")


def published_alerts(settings: Settings) -> dict[str, dict]:
    return {doc["id"]: doc for _, doc in read_all(settings, settings.topics.alerts)}


def produce_all(settings: Settings, per_domain: dict[str, list]) -> None:
    for domain, recs in per_domain.items():
        produce(settings, settings.topics.events(domain), recs)


def published_windows(settings: Settings) -> dict[tuple[str, str, int], dict]:
    """Each entity window's latest figures, from the partitions' window records."""
    from streams.windows import entity_rows

    latest = {}
    for _, doc in read_all(settings, settings.topics.aggregates):
        for entity, agg in entity_rows(doc):
            latest[(doc["domain"], entity, doc["window_start"])] = {"closed": doc["closed"], "agg": agg}
    return latest


def where(settings: Settings, missing: set, extra: set) -> str:
    """For a person: which partitions and windows the missing and extra windows are in,
    and how far each partition's worker says it got."""
    def count(keys: set) -> dict:
        return dict(sorted(Counter((d, partition_for(e, settings.partitions), ws) for d, e, ws in keys).items()))
    vitals = {k: {f: v.get(f) for f in ("offset", "events", "late", "records", "worker")}
              for k, v in read_all(settings, settings.topics.vitals)}
    return f"missing (domain, partition, window): {count(missing)}; extra: {count(extra)}; vitals: {vitals}"


def windows_match(settings: Settings, ref: dict) -> bool:
    got = published_windows(settings)
    if got.keys() != ref.keys():
        return False
    for key, doc in ref.items():
        try:
            assert_matches(key[0], got[key]["agg"], doc)
        except AssertionError:
            return False
    return True


def assert_windows_equal(settings: Settings, ref: dict) -> None:
    got = published_windows(settings)
    assert got.keys() == ref.keys(), where(settings, ref.keys() - got.keys(), got.keys() - ref.keys())
    wrong = []
    for key, doc in ref.items():
        try:
            assert_matches(key[0], got[key]["agg"], doc)
        except AssertionError:
            wrong.append((*key, partition_for(key[1], settings.partitions), got[key]["agg"].events, doc["events"]))
    assert not wrong, f"{len(wrong)} windows differ (domain, entity, start, partition, events, expected): {wrong[:20]}"


@pytest.mark.parametrize("batch", [1, 25])
def test_every_window_equals_the_reference_with_out_of_order_and_late_events(
        settings: Settings, worker: Proc, batch: int) -> None:
    events = generate(3000, seed=batch)
    ref, late = expected(events, settings.partitions)
    assert 0 < late < 300  # the generator really makes some events late
    produce_all(settings, records(events, batch, settings.partitions))
    try:
        wait_for(lambda: windows_match(settings, ref), timeout=90, every=1.0)
    finally:
        assert_windows_equal(settings, ref)
    totals = vitals_totals(settings)
    assert sum(t["events"] for t in totals.values()) == len(events) - late
    letters = [doc for _, doc in read_all(settings, settings.topics.deadletter)]
    assert sum(d["reason"].startswith("late: ") for d in letters) == late


def test_closed_windows_are_published_as_closed(settings: Settings, worker: Proc) -> None:
    events = generate(600, seed=5, delay_s=0)
    produce_all(settings, records(events, 1, settings.partitions))
    ref, _ = expected(events, settings.partitions)
    wait_for(lambda: windows_match(settings, ref), timeout=60, every=1.0)
    from streams.events import parse_ts

    stream_time: dict[tuple[str, int], int] = defaultdict(int)
    for e in events:
        key = (domain_of(e), partition_for(entity_of(e), settings.partitions))
        stream_time[key] = max(stream_time[key], parse_ts(e["ts"]))
    # A window is closed exactly when its partition's stream time passed its end + lateness.
    for (domain, entity, ws), doc in published_windows(settings).items():
        now = stream_time[(domain, partition_for(entity, settings.partitions))]
        assert doc["closed"] == (ws + W + LATENESS <= now), (domain, entity, ws)


def test_the_group_commits_every_processed_record(settings: Settings, worker: Proc) -> None:
    # Many fetches per partition: Faust's gap bookkeeping used to advance a partition's
    # commit by one fetch per commit interval (2.8 s), which would take a minute here
    # (streams/transport.py).
    events = generate(1800, seed=3, delay_s=0)
    rounds = 20
    for i in range(rounds):
        produce_all(settings, records(events[i::rounds], 1, settings.partitions))
        wait_for(lambda: sum(t["records"] for t in vitals_totals(settings).values()) == (i + 1) * len(events) // rounds,
                 timeout=60, every=0.2)
    parts = [TopicPartition(settings.topics.events(d), p) for d in DOMAINS for p in range(settings.partitions)]
    wait_for(lambda: asyncio.run(uncommitted(settings.bootstrap, settings.topics.app_id, parts)) == 0,
             timeout=20, every=0.5)


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_sigkill_mid_stream_several_times_loses_and_doubles_nothing(
        settings: Settings, start_worker: Callable[..., Proc], store: str) -> None:
    # Large enough that a worker is still busy when it is killed the fifth time.
    events = generate(240_000, seed=11, entities=200)
    ref, late = expected(events, settings.partitions)
    per_domain = records(events, 1, settings.partitions)
    alerts = expected_alerts(settings, per_domain)
    assert len(alerts) > 500
    produce_all(settings, per_domain)

    def applied() -> int:
        return sum(t["events"] for t in vitals_totals(settings).values())

    kills, seen = 0, 0
    while kills < 5:
        w = start_worker(str(kills), CITYBRAIN_STORE=store)
        # Kill only once this worker is visibly part-way through the stream.
        now = wait_for(lambda: (n := applied()) > seen and n, timeout=60, every=0.1)
        if now >= len(events) - late:
            break  # it finished before we could kill it: nothing left to interrupt
        w.kill()
        kills, seen = kills + 1, now
    assert kills >= 3
    start_worker("last", CITYBRAIN_STORE=store)
    try:
        wait_for(lambda: windows_match(settings, ref), timeout=240, every=2.0)
    finally:
        assert_windows_equal(settings, ref)
    assert applied() == len(events) - late
    # Alerts: the same ids, counts, severities, statuses and histories as without crashes.
    try:
        wait_for(lambda: published_alerts(settings) == alerts, timeout=60, every=1.0)
    finally:
        got = published_alerts(settings)
        assert got == alerts, alerts_diff(got, alerts)


def test_two_workers_share_partitions_and_stay_exact_when_one_leaves(
        settings: Settings, start_worker: Callable[..., Proc]) -> None:
    events = generate(4000, seed=21)
    ref, late = expected(events, settings.partitions)
    half = len(events) // 2
    first = start_worker("a")
    start_worker("b")
    produce_all(settings, records(events[:half], 1, settings.partitions))

    def owners() -> set[str]:
        latest = {k: v for k, v in read_all(settings, settings.topics.vitals)}
        return {v["worker"] for v in latest.values()}

    wait_for(lambda: len(owners()) == 2, timeout=60)
    assert first.stop() == 0  # leaves the group gracefully
    produce_all(settings, records(events[half:], 1, settings.partitions))
    wait_for(lambda: windows_match(settings, ref), timeout=90, every=1.0)
    assert sum(t["events"] for t in vitals_totals(settings).values()) == len(events) - late


def test_entity_route_returns_the_windows_in_range(settings: Settings, worker: Proc, api: Api) -> None:
    events = [e for e in generate(1500, seed=8, delay_s=0)]
    produce_all(settings, records(events, 1, settings.partitions))
    ref, _ = expected(events, settings.partitions)
    sensor = next(e for d, e, _ in ref if d == "traffic")
    mine = sorted(ws for d, e, ws in ref if d == "traffic" and e == sensor)

    def windows(**params: Any) -> list:
        r = api.get(f"/api/v1/entities/traffic/{sensor}", params=params)
        return r.json()["windows"] if r.status_code == 200 else []

    wait_for(lambda: len(windows()) == len(mine), timeout=60)
    got = windows(**{"from": mine[2], "to": mine[5]})
    assert [w["start"] for w in got] == mine[2:5]
    for w in got:
        r = ref[("traffic", sensor, w["start"])]
        assert w["figures"]["events"] == r["events"]
        assert w["figures"]["volume"] == r["volume"]["sum"]
    body = api.get(f"/api/v1/entities/traffic/{sensor}").json()
    assert body["sliding"]["last_5m"]["events"] == sum(
        ref[("traffic", sensor, ws)]["events"] for ws in mine if ws >= mine[-1] + W - 5 * W)
    assert api.get("/api/v1/entities/traffic/nope").status_code == 404
    assert api.get(f"/api/v1/entities/traffic/{sensor}", params={"from": "yesterday"}).status_code == 422


def test_area_roll_ups_add_up_their_entities(settings: Settings, start_worker: Callable[..., Proc],
                                             api: Api) -> None:
    events = generate(1500, seed=9, delay_s=0)
    ref, _ = expected(events, settings.partitions)
    entities = sorted({(d, e) for d, e, _ in ref})
    district = {e: ("市南区" if i % 2 else "崂山区") for i, (_, e) in enumerate(entities)}
    registry = [{"id": e, "domain": d, "district": district[e], "street": f"{district[e]}街道{i % 3}",
                 "community": f"社区{i % 5}", "grid_cell": f"网格{i % 7}"} for i, (d, e) in enumerate(entities)]
    produce(settings, settings.topics.registry, [(r["id"].encode(), orjson.dumps(r)) for r in registry])
    start_worker()
    produce_all(settings, records(events, 1, settings.partitions))
    wait_for(lambda: windows_match(settings, ref), timeout=60, every=1.0)

    newest = max(ws for d, e, ws in ref if d == "traffic" and district[e] == "市南区")
    want = sum(doc["events"] for (d, e, ws), doc in ref.items()
               if d == "traffic" and ws == newest and district[e] == "市南区")
    body = wait_for(lambda: (r := api.get("/api/v1/areas/district/市南区")).status_code == 200
                    and (r.json()["domains"]["traffic"] or {}).get("figures", {}).get("events") == want
                    and r.json(), timeout=30)
    assert body["domains"]["traffic"]["window"]["start"] == newest
    assert {c["id"] for c in body["children"]} == {f"市南区街道{i}" for i in range(3)}
    assert sum(body["entities"].values()) == sum(1 for r in registry if r["district"] == "市南区")
    city = api.get("/api/v1/overview").json()["domains"]["traffic"]["city"]
    city_newest = max(ws for d, _, ws in ref if d == "traffic")
    assert city["figures"]["events"] == sum(doc["events"] for (d, _, ws), doc in ref.items()
                                            if d == "traffic" and ws == city_newest)
    assert api.get("/api/v1/areas/district/nowhere").status_code == 404
    assert api.get("/api/v1/areas/planet/earth").status_code == 404
