"""Produce → worker → observable result, against the real broker and a real worker process."""

from __future__ import annotations

import time
from typing import Any

import orjson

from services.config import Settings
from tests.conftest import Proc, event_records, produce, read_all, vitals_totals, wait_for

NOW = int(time.time() * 1000)


def flow(i: int, **over: Any) -> dict[str, Any]:
    return {"type": "traffic.flow", "ts": NOW + i, "sensor_id": f"T-{i % 7:04d}", "interval_s": 60,
            "volume": 10 + i % 5, "speed_kmh": 40.0, "occupancy": 0.2, **over}


def gate(i: int) -> dict[str, Any]:
    return {"type": "gate.pass", "ts": "2026-11-21T08:00:00+08:00", "gate_id": f"G-{i % 5:04d}",
            "direction": "in", "method": "qr", "result": "granted", "subject": f"s{i}"}


def grid(i: int) -> dict[str, Any]:
    return {"type": "grid.measurement", "ts": NOW, "feeder_id": f"F-{i % 3:04d}", "load_kw": 1200.0,
            "voltage_kv": 10.1, "frequency_hz": 50.0}


def counted(settings: Settings, domain: str, events: int, rejected: int = 0) -> bool:
    t = vitals_totals(settings).get(domain, {})
    return t.get("events") == events and t.get("rejected") == rejected


def test_every_domain_is_consumed_validated_and_counted(settings: Settings, worker: Proc) -> None:
    t = settings.topics
    produce(settings, t.events("traffic"), event_records([flow(i) for i in range(50)], "sensor_id"))
    produce(settings, t.events("gate"), event_records([gate(i) for i in range(30)], "gate_id"))
    produce(settings, t.events("grid"), event_records([grid(i) for i in range(20)], "feeder_id"))
    wait_for(lambda: counted(settings, "traffic", 50) and counted(settings, "gate", 30)
             and counted(settings, "grid", 20), timeout=60)


def test_batch_records_count_every_event_and_any_key_works(settings: Settings, worker: Proc) -> None:
    batches = [(b"whatever-key", orjson.dumps({"events": [flow(i) for i in range(j, j + 25)]}))
               for j in range(0, 100, 25)]
    batches.append((None, orjson.dumps({"events": [flow(1000)]})))  # unkeyed
    produce(settings, settings.topics.events("traffic"), batches)
    wait_for(lambda: counted(settings, "traffic", 101), timeout=60)


def test_bad_input_goes_to_the_dead_letter_topic_and_good_neighbours_survive(
        settings: Settings, worker: Proc) -> None:
    bad = [
        (b"k1", b"{not json", "invalid json"),
        (b"k2", orjson.dumps({k: v for k, v in flow(1).items() if k != "speed_kmh"}), "missing field: speed_kmh"),
        (b"k3", orjson.dumps(flow(2, volume="many")), "wrong type: volume"),
        (b"k4", orjson.dumps(flow(3, volume=-4)), "out of range: volume"),
        (b"k5", orjson.dumps(flow(4, occupancy=1.7)), "out of range: occupancy"),
        (b"k6", orjson.dumps(flow(5, ts="last tuesday")), "bad timestamp"),
        (b"k7", orjson.dumps({"events": [flow(6)] * (settings.max_batch + 1)}), "oversized batch"),
        (b"k8", b"\xff\xfe\x00binary", "invalid json"),
        (b"k9", orjson.dumps({"events": [flow(7), flow(8, speed_kmh=None), flow(9)]}), "missing field: speed_kmh"),
    ]
    good = event_records([flow(100 + i) for i in range(40)], "sensor_id")
    records = []
    for i, (k, v, _) in enumerate(bad):  # interleave: every bad record has good neighbours
        records += good[i * 4:(i + 1) * 4] + [(k, v)]
    records += good[36:]
    produce(settings, settings.topics.events("traffic"), records)
    # 40 good single events + the 2 good events of the mixed batch record
    wait_for(lambda: counted(settings, "traffic", 42, rejected=len(bad)), timeout=60)

    letters = {key: doc for key, doc in read_all(settings, settings.topics.deadletter)}
    for key, raw, reason in bad:
        doc = letters[key]
        assert reason in doc["reason"], (key, doc["reason"])
        assert doc["topic"] == settings.topics.events("traffic")
        assert isinstance(doc["partition"], int) and isinstance(doc["offset"], int)
    assert letters[b"k1"]["raw"] == "{not json"
    assert letters[b"k9"]["index"] == 1


def test_a_killed_worker_restarts_without_counting_anything_twice(
        settings: Settings, start_worker: Any) -> None:
    first = start_worker()
    topic = settings.topics.events("grid")
    produce(settings, topic, event_records([grid(i) for i in range(200)], "feeder_id"))
    wait_for(lambda: counted(settings, "grid", 200), timeout=60)
    first.kill()  # SIGKILL: no graceful commit
    produce(settings, topic, event_records([grid(i) for i in range(100)], "feeder_id"))
    start_worker()
    wait_for(lambda: counted(settings, "grid", 300), timeout=60)
    time.sleep(3)  # anything replayed after the restart would show by now
    assert counted(settings, "grid", 300)
