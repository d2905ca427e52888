"""Right answers with real producers: the same twenty minutes of a small district, replayed
at full speed by a gateway written against librdkafka (confluent-kafka, default settings
and partitioner), by one that keys with murmur2 (aiokafka), and as gateway batches keyed
by gateway id, give the same windows, equal to the reference, and the same alerts: every
injected fault alerted, no alert on a healthy device, nothing valid dead-lettered.
And a worker that was down while the city went on producing catches up calmly."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any, Callable

import orjson
from confluent_kafka import Producer

from services.config import Settings
from services.provision import ensure_topics
from streams.events import ENTITY_FIELD
from tests.conftest import Proc, child_env, produce, read_all, vitals_totals, wait_for
from tests.reference import reference_windows
from tests.test_stream_engine import (LATENESS, W, assert_windows_equal, domain_of, entity_of, expected_alerts,
                                      published_alerts, windows_match)

T0 = 1_795_219_200_000  # 2026-11-21T00:00:00Z
MINUTES = 20
FEVER = ("G-0002", 5)  # (gate, minute)
OUTAGE = ("F-0003", 8, 10)  # (feeder, from minute, to minute): breaker open
SILENT = ("F-0004", 12, 16)  # (feeder, from, to): sends nothing
FAULTY = {FEVER[0], OUTAGE[0], SILENT[0]}


def district(seed: int = 7, devices: int = 6) -> list[dict[str, Any]]:
    """Every device's events over MINUTES (`devices` of each kind), in the order a gateway
    would send them: by time, a few seconds out of order."""
    rnd = random.Random(seed)
    out: list[tuple[float, dict[str, Any]]] = []
    for g in range(devices):
        gid = f"G-{g:04d}"
        for t in range(0, MINUTES * 60_000, 30_000):
            out.append((t, {"type": "gate.heartbeat", "ts": T0 + t, "gate_id": gid}))
        for t in sorted(rnd.sample(range(MINUTES * 60_000), 40)):
            fever = gid == FEVER[0] and FEVER[1] * 60_000 <= t < (FEVER[1] + 1) * 60_000
            out.append((t, {"type": "gate.pass", "ts": T0 + t, "gate_id": gid, "direction": rnd.choice(["in", "out"]),
                            "method": "face", "result": "granted", "subject": f"s{rnd.randrange(500)}",
                            "temperature_c": 38.6 if fever else round(rnd.uniform(36.1, 36.9), 1)}))
    for f in range(devices):
        fid = f"F-{f:04d}"
        for t in range(0, MINUTES * 60_000, 10_000):
            minute = t // 60_000
            if fid == SILENT[0] and SILENT[1] <= minute < SILENT[2]:
                continue
            open_ = fid == OUTAGE[0] and OUTAGE[1] <= minute < OUTAGE[2]
            out.append((t, {"type": "grid.measurement", "ts": T0 + t, "feeder_id": fid,
                            "load_kw": 0.0 if open_ else round(rnd.uniform(1900, 2100), 1),
                            "voltage_kv": 0.0 if open_ else round(rnd.uniform(10.05, 10.25), 3),
                            "frequency_hz": round(rnd.uniform(49.98, 50.02), 3),
                            "breaker": "open" if open_ else "closed"}))
    for s in range(devices):
        sid = f"T-{s:04d}"
        for t in range(0, MINUTES * 60_000, 60_000):
            out.append((t, {"type": "traffic.flow", "ts": T0 + t, "sensor_id": sid, "interval_s": 60,
                            "volume": rnd.randrange(20, 30), "speed_kmh": round(rnd.uniform(45, 55), 1),
                            "occupancy": round(rnd.uniform(0.1, 0.2), 3)}))
    return [e for t, e in sorted(out, key=lambda te: te[0] + rnd.uniform(0, 3000))]


def gateway(e: dict[str, Any]) -> str:
    """Two devices of each kind per gateway."""
    return f"GW-{int(entity_of(e)[2:]) // 2}"


def by_librdkafka(settings: Settings, events: list[dict[str, Any]], batches: bool = False) -> None:
    """As a C, Go or Node gateway would: librdkafka's defaults, keyed by device id, or
    batches of each gateway's events keyed by gateway id, sent every 10 events or 20 s."""
    p = Producer({"bootstrap.servers": settings.bootstrap})
    if batches:
        pending: dict[tuple[str, str], list] = {}
        for e in events:
            key = (domain_of(e), gateway(e))
            batch = pending.setdefault(key, [])
            if batch and (len(batch) == 10 or e["ts"] - batch[0]["ts"] >= 20_000):
                p.produce(settings.topics.events(key[0]), orjson.dumps({"events": pending.pop(key)}), key[1].encode())
            pending.setdefault(key, []).append(e)
        for (domain, gw), evs in pending.items():
            p.produce(settings.topics.events(domain), orjson.dumps({"events": evs}), gw.encode())
    else:
        for e in events:
            p.produce(settings.topics.events(domain_of(e)), orjson.dumps(e), entity_of(e).encode())
    assert p.flush(30) == 0


def by_murmur2(settings: Settings, events: list[dict[str, Any]]) -> None:
    for domain in ENTITY_FIELD:
        produce(settings, settings.topics.events(domain),
                [(entity_of(e).encode(), orjson.dumps(e)) for e in events if domain_of(e) == domain])


def reference(events: list[dict[str, Any]]) -> dict:
    out = {}
    for domain in ENTITY_FIELD:
        evs = [{**e, "entity": entity_of(e)} for e in events if domain_of(e) == domain]
        for (entity, ws), doc in reference_windows(domain, evs, W, LATENESS).items():
            out[(domain, entity, ws)] = doc
    return out


def alerts_of(settings: Settings) -> dict[str, tuple]:
    return {a["id"]: (a["rule"], a["entity"], a["status"], a["count"], a["severity"], a["started_at"],
                      a["resolved_at"]) for a in published_alerts(settings).values()}


def test_any_partitioner_and_gateway_batches_give_the_same_windows_and_alerts(
        settings: Settings, start_worker: Callable[..., Proc]) -> None:
    events = district()
    ref = reference(events)
    assert sum(d["events"] for d in ref.values()) == len(events)  # nothing in it is late
    runs = {"murmur2": settings}
    for name in ("librdkafka", "gateway"):
        runs[name] = replace(settings, topic_prefix=f"{settings.topic_prefix}{name}.")
        asyncio.run(ensure_topics(runs[name]))
    by_murmur2(runs["murmur2"], events)
    by_librdkafka(runs["librdkafka"], events)
    by_librdkafka(runs["gateway"], events, batches=True)
    for name, s in runs.items():
        start_worker(name, **{k: v for k, v in child_env(s).items() if k.startswith("CITYBRAIN_")})

    alerts = {}
    for name, s in runs.items():
        wait_for(lambda: sum(t["events"] for t in vitals_totals(s).values()) == len(events), timeout=120)
        wait_for(lambda: windows_match(s, ref), timeout=60, every=1.0)
        assert_windows_equal(s, ref)
        assert read_all(s, s.topics.deadletter) == [], name
        alerts[name] = wait_for(lambda: (a := alerts_of(s)) and a, timeout=30)

    fired = {(rule, entity) for rule, entity, *_ in alerts["murmur2"].values()}
    assert {("gate.fever", FEVER[0]), ("grid.outage", OUTAGE[0]), ("grid.offline", SILENT[0])} <= fired
    assert {entity for _, entity in fired} <= FAULTY, fired  # no alert on a healthy device
    wait_for(lambda: alerts_of(runs["librdkafka"]) == alerts_of(runs["gateway"]) == alerts["murmur2"], timeout=30)


def test_a_worker_down_while_the_city_goes_on_catches_up_calmly(
        settings: Settings, start_worker: Callable[..., Proc]) -> None:
    """A backlog of single-event records from librdkafka, the worker killed three times
    while it works through it, then the rest of the district's twenty minutes produced
    while none runs, then a new worker: windows exact, nothing valid dead-lettered, and
    exactly the alerts of an uninterrupted run (no storm of offline alerts, no duplicates)."""
    events = district(seed=8, devices=40)
    ref = reference(events)
    half = len(events) // 2
    per_domain = {d: [(entity_of(e).encode(), orjson.dumps(e)) for e in events if domain_of(e) == d]
                  for d in ENTITY_FIELD}
    want = expected_alerts(settings, per_domain)
    by_librdkafka(settings, events[:half])

    def working(w: Proc) -> bool:
        """The worker has processed records: its vitals name it."""
        return any(doc["worker"].endswith(f":{w.proc.pid}") for _, doc in read_all(settings, settings.topics.vitals))

    for kill in range(3):
        w = start_worker(f"killed-{kill}")
        wait_for(lambda: working(w), timeout=90, every=0.05)
        w.kill()
    by_librdkafka(settings, events[half:])
    start_worker("again")
    wait_for(lambda: windows_match(settings, ref), timeout=120, every=1.0)
    assert_windows_equal(settings, ref)
    assert read_all(settings, settings.topics.deadletter) == []
    wait_for(lambda: published_alerts(settings) == want, timeout=60, every=1.0)
