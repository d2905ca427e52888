"""Simulated units (`citybrain simulate --handle`): they take cases through the whole
workflow on the real stack, some late, so escalations and KPIs move."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

import numpy as np
import orjson
import pytest

from services import units
from services.config import Settings
from streams.alerting import iso
from tests.conftest import Api, Proc, event_records, produce, wait_for
from tests.test_incidents_stack import FEEDER, POWERED, WITNESSES, feeder_events, gate_events

T0 = 1_795_219_200_000


def test_units_act_mostly_in_time_and_a_share_late() -> None:
    rng = np.random.default_rng(1)
    case = {"status": "dispatched", "accept_by": iso(T0 + 100_000), "handle_by": iso(T0 + 900_000)}
    steps = [units.next_step(case, T0, rng) for _ in range(2000)]
    assert {k for k, _ in steps} == {"accept"}
    late = sum(1 for _, after in steps if after > 100) / len(steps)
    assert 0.2 < late < 0.3 and all(10 <= after <= 150 for _, after in steps)
    assert units.next_step({**case, "status": "accepted"}, T0, rng)[0] == "feedback"
    assert units.next_step({**case, "status": "closed"}, T0, rng) is None


def test_simulated_units_take_a_case_to_closed(settings: Settings, start_worker: Callable[..., Proc],
                                               start_api: Callable[[], Api], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(units, "QUICK_S", (0.5, 1.0))
    produce(settings, settings.topics.registry,
            [(e["id"].encode(), orjson.dumps(e)) for e in [FEEDER] + POWERED + WITNESSES])
    start_worker(CITYBRAIN_CASE_ACCEPT_S="3", CITYBRAIN_CASE_HANDLE_S="3", CITYBRAIN_INCIDENT_HOLD_S="5")
    api = start_api()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
    produce(settings, settings.topics.events("grid"), event_records(feeder_events(), "feeder_id"))
    produce(settings, settings.topics.events("gate"), event_records(gate_events(), "gate_id"))

    loop = asyncio.new_event_loop()
    task = loop.create_task(units.run_units(settings.bootstrap, settings.topics))
    threading.Thread(target=lambda: loop.run_until_complete(asyncio.gather(task, return_exceptions=True)),
                     daemon=True).start()
    try:
        (case,) = wait_for(lambda: api.get("/api/v1/cases", params={"status": "closed"}).json()["cases"], timeout=90)
    finally:
        loop.call_soon_threadsafe(task.cancel)
    history = api.get(f"/api/v1/cases/{case['id']}").json()["history"]
    actions = [h["action"] for h in history if h["action"] != "escalated"]
    assert actions == ["dispatched", "accepted", "handled", "verified", "closed"]
    assert {h["by"] for h in history if h["action"] not in ("dispatched", "escalated")} == {units.HANDLER}
