"""Clocks that lie: an event stamped far ahead of the receiving process's clock is
dead-lettered as `future` and cannot move stream time, at the worker and at the ingest
route; a clock running ahead within the allowed skew is shown per entity."""

from __future__ import annotations

import time

import httpx
import orjson

from services.config import Settings
from tests.conftest import Api, Proc, produce, read_all, vitals_totals, wait_for

FEEDERS = [f"F-{i:04d}" for i in range(8)]


def measurement(feeder: str, ts: int) -> dict:
    return {"type": "grid.measurement", "ts": ts, "feeder_id": feeder, "load_kw": 1200.0,
            "voltage_kv": 10.2, "frequency_hz": 50.0}


def test_an_event_from_2099_is_dead_lettered_and_moves_no_clock(settings: Settings, worker: Proc, api: Api) -> None:
    now = int(time.time() * 1000)
    start = now - 10 * 60_000
    before = [measurement(f, t) for t in range(start, now - 5 * 60_000, 10_000) for f in FEEDERS]
    liar = measurement(FEEDERS[0], 4_102_358_400_000)  # 2099-12-31
    # half a minute fast: within the default skew, so it counts (last, as a fast clock's
    # newest event would be; it moves stream time like any event)
    ahead = measurement(FEEDERS[1], now + 30_000)
    after = [measurement(f, t) for t in range(now - 5 * 60_000, now, 10_000) for f in FEEDERS]
    topic = settings.topics.events("grid")
    produce(settings, topic, [(e["feeder_id"].encode(), orjson.dumps(e)) for e in before + [liar] + after + [ahead]])

    valid = len(before) + len(after) + 1
    wait_for(lambda: vitals_totals(settings).get("grid", {}).get("events") == valid, timeout=60)
    letters = [doc for _, doc in read_all(settings, settings.topics.deadletter)]
    assert [d["reason"].split(":")[0] for d in letters] == ["future"]
    assert "2099-12-31" in letters[0]["reason"] and "allowed skew 60s" in letters[0]["reason"]
    # no real event was judged late, no feeder judged silent
    alerts = [doc for _, doc in read_all(settings, settings.topics.alerts)]
    assert not [a for a in alerts if a["rule"] == "grid.offline"]
    metrics = wait_for(lambda: (text := api.get("/metrics", token=None).text)
                       and 'citybrain_events_future_total{domain="grid"} 1.0' in text and text, timeout=30)
    assert f'citybrain_clock_ahead_seconds{{domain="grid",entity="{FEEDERS[1]}"}}' in metrics


def test_the_ingest_route_refuses_an_event_from_the_future(api: Api) -> None:
    now = int(time.time() * 1000)
    body = [measurement("F-0001", now), measurement("F-0002", 4_102_358_400_000)]
    r = httpx.post(api.url + "/api/v1/ingest/grid", content=orjson.dumps(body),
                   headers={"Authorization": "Bearer ti", "Content-Type": "application/json"})
    assert r.status_code == 202
    assert r.json()["accepted"] == 1
    assert [(e["index"], e["reason"].split(":")[0]) for e in r.json()["errors"]] == [(1, "future")]
