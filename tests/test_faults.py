"""Faults the service must survive: a frozen broker, a restarted API."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from services.broker import EmbeddedBroker
from services.config import Settings
from services.provision import ensure_topics
from tests.conftest import (TOKENS, Api, Proc, child_env, event_records, free_port, produce,
                            vitals_totals, wait_for)
from tests.test_ingest import grid


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
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
    port = free_port()
    api = Api(Proc(["api", "--api-port", str(port)],
                   child_env(s, CITYBRAIN_API_TOKENS=",".join(f"{t}={r}" for t, r in TOKENS.items())),
                   tmp_path / "api.log"), f"http://127.0.0.1:{port}")
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
