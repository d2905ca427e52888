"""Faults the service must survive: a frozen broker, a restarted API."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import orjson
import pytest

from services.broker import EmbeddedBroker
from services.config import Settings
from services.provision import ensure_topics
from tests.conftest import (Api, Proc, child_env, event_records, free_port, launch_api, produce,
                            vitals_totals, wait_for)
from tests.test_ingest import grid


@pytest.fixture
def own_broker(processes: None, tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, since the test freezes it."""
    b = EmbeddedBroker(free_port(), tmp_path / "broker").start()
    yield b
    if b.proc is not None:
        b.proc.send_signal(signal.SIGCONT)
    b.stop()


def test_frozen_broker_workers_and_api_recover_without_loss(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = Settings(broker=own_broker.address, topic_prefix=f"f{uuid.uuid4().hex[:6]}.", partitions=4,
                 data_dir=tmp_path, session_timeout_s=2.0)
    asyncio.run(ensure_topics(s))
    worker = Proc(["worker"], child_env(s), tmp_path / "worker.log")
    api = launch_api(s, tmp_path)
    try:
        topic = s.topics.events("grid")
        produce(s, topic, event_records([grid(i) for i in range(100)], "feeder_id"))
        wait_for(lambda: vitals_totals(s).get("grid", {}).get("events") == 100, timeout=60)

        assert own_broker.proc is not None
        own_broker.proc.send_signal(signal.SIGSTOP)
        time.sleep(15)
        own_broker.proc.send_signal(signal.SIGCONT)

        produce(s, topic, event_records([grid(i) for i in range(100)], "feeder_id"))
        wait_for(lambda: vitals_totals(s).get("grid", {}).get("events") == 200, timeout=120)
        assert worker.proc.poll() is None and api.proc.proc.poll() is None
        wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
        wait_for(lambda: api.get("/api/v1/overview").json()["domains"]["grid"]["events"] == 200, timeout=60)
    finally:
        worker.stop()
        api.proc.stop()


def test_a_restarted_api_rebuilds_its_views(settings: Settings, worker: Proc,
                                            start_api: Callable[[], Api]) -> None:
    first = start_api()
    produce(settings, settings.topics.events("grid"), event_records([grid(i) for i in range(40)], "feeder_id"))
    wait_for(lambda: first.get("/api/v1/overview").json()["domains"]["grid"]["events"] == 40, timeout=60)
    before = wait_for(lambda: (r := first.get("/api/v1/entities/grid/F-0001")).status_code == 200
                      and r.json()["windows"], timeout=30)
    first.proc.stop()
    second = start_api()
    wait_for(lambda: second.get("/readyz", token=None).status_code == 200, timeout=60)
    assert second.get("/api/v1/overview").json()["domains"]["grid"]["events"] == 40
    assert second.get("/api/v1/entities/grid/F-0001").json()["windows"] == before


def test_alerts_and_their_history_outlive_a_restart_of_the_memory_only_broker(
        own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The embedded broker forgets everything when it restarts; the API's archive doesn't.
    While the broker is away the API says so on /readyz and keeps serving what it has."""
    from tests.test_alerts import FEEDER, alerts, normal, outage

    s = Settings(broker=own_broker.address, topic_prefix=f"f{uuid.uuid4().hex[:6]}.", partitions=4,
                 data_dir=tmp_path, session_timeout_s=2.0)
    asyncio.run(ensure_topics(s))
    worker = Proc(["worker"], child_env(s), tmp_path / "worker.log")

    def start_api() -> Api:
        a = launch_api(s, tmp_path)
        wait_for(lambda: a.get("/readyz", token=None).status_code == 200, timeout=60)
        return a

    api = start_api()
    again = None
    try:
        produce(s, s.topics.registry, [(b"F-0001", orjson.dumps(FEEDER))])
        produce(s, s.topics.events("grid"), event_records(normal(0, 60) + outage(60, 60), "feeder_id"))
        alert = wait_for(lambda: alerts(api, rule="grid.outage"), timeout=60)[0]
        history = wait_for(lambda: api.get(f"/api/v1/alerts/{alert['id']}").json()["history"])

        own_broker.stop()  # SIGTERM, then SIGKILL: its topics are gone
        worker.stop()
        not_ready = wait_for(lambda: (r := api.get("/readyz", token=None)).status_code == 503 and r, timeout=30)
        assert not all(not_ready.json()["views"].values()) or "broker" in not_ready.text
        assert api.get("/healthz", token=None).status_code == 200
        assert [a["id"] for a in alerts(api, rule="grid.outage")] == [alert["id"]]  # still served

        again = EmbeddedBroker(own_broker.port, tmp_path / "broker-again").start()  # same address, empty
        asyncio.run(ensure_topics(s))
        wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
        assert api.get(f"/api/v1/alerts/{alert['id']}").json()["history"] == history
        api.proc.stop()
        api = start_api()  # a fresh API on the empty broker: the archive has it all
        assert api.get(f"/api/v1/alerts/{alert['id']}").json()["history"] == history
    finally:
        worker.stop()
        api.proc.stop()
        if again is not None:
            again.stop()
