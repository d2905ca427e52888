"""Incidents on the real stack: a feeder outage and the gates and road detector it powers
going silent are one incident, whether the feeder's alert arrives before or after the
devices' alerts, and a real webhook receiver is told of the incident, not of each alert in it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest

from services.config import Settings
from streams.cases import case_id
from streams.incidents import incident_id
from tests.conftest import Api, Proc, child_env, event_records, produce, wait_for
from tests.test_notifier import FAST, Receiver

T0 = 1_795_219_200_000  # 2026-11-21T00:00:00Z
AREA = {"district": "市南区", "street": "湛山街道", "community": "湛山社区", "grid_cell": "湛山社区第1网格"}
ELSEWHERE = {**AREA, "community": "太平角社区", "grid_cell": "太平角社区第2网格"}
FEEDER = {"id": "F-0001", "domain": "grid", "name": "湛山 10kV 1号线", **AREA, "rated_kw": 5000, "nominal_kv": 10.0}
POWERED = [{"id": f"G-000{n}", "domain": "gate", "feeder": "F-0001", **AREA} for n in range(1, 4)]
# The road past the community, in the next grid cell, on the same feeder.
DETECTOR_AREA = {**AREA, "grid_cell": "湛山社区第2网格"}
DETECTOR = {"id": "T-0001", "domain": "traffic", "feeder": "F-0001", "free_flow_kmh": 50, **DETECTOR_AREA}
# The notifier's hold-back in the cause-first case: long enough for the gates' alerts to
# join the incident on a loaded machine, before anything is told.
HOLD_S = 15
# Gates on another supply that keep beating, so every partition's stream time moves on.
WITNESSES = [{"id": f"G-01{n:02d}", "domain": "gate", **ELSEWHERE} for n in range(16)]
ROAD_WITNESSES = [{"id": f"T-01{n:02d}", "domain": "traffic", "free_flow_kmh": 50, **ELSEWHERE} for n in range(8)]


def feeder_events() -> list[dict[str, Any]]:
    def reading(t: int, up: bool) -> dict[str, Any]:
        return {"type": "grid.measurement", "ts": T0 + t * 1000, "feeder_id": "F-0001",
                "load_kw": 2500.0 if up else 0.0, "voltage_kv": 10.1 if up else 0.0,
                "frequency_hz": 50.0 if up else 0.0, "breaker": "closed" if up else "open"}
    return [reading(t, t < 300) for t in range(0, 600, 10)]


def gate_events() -> list[dict[str, Any]]:
    """Every gate beats each 10 s; the powered ones fall silent when the power goes (300 s)."""
    return [{"type": "gate.heartbeat", "ts": T0 + t * 1000, "gate_id": g["id"]}
            for t in range(0, 600, 10) for g in POWERED + WITNESSES
            if g not in POWERED or t < 300]


def traffic_events() -> list[dict[str, Any]]:
    """Every detector reports each minute (readings that vary, as a live road's do); the
    powered one falls silent when the power goes."""
    return [{"type": "traffic.flow", "ts": T0 + t * 1000, "sensor_id": d["id"], "interval_s": 60,
             "volume": 15 + t // 60 % 7, "speed_kmh": 40.0 + t // 60 % 5, "occupancy": 0.10 + t // 60 % 3 / 100}
            for t in range(0, 600, 60) for d in [DETECTOR] + ROAD_WITNESSES if d is not DETECTOR or t < 300]


def alerts(api: Api, rule: str) -> list[dict[str, Any]]:
    return api.get("/api/v1/alerts", params={"rule": rule}).json()["alerts"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().up()
    yield r
    r.down()


@pytest.fixture
def stack(request: pytest.FixtureRequest, settings: Settings, start_worker: Callable[..., Proc],
          start_api: Callable[[], Api], receiver: Receiver, tmp_path: Path) -> Iterator[Api]:
    produce(settings, settings.topics.registry,
            [(e["id"].encode(), orjson.dumps(e)) for e in [FEEDER, DETECTOR] + POWERED + WITNESSES + ROAD_WITNESSES])
    hold = {"CITYBRAIN_INCIDENT_HOLD_S": str(request.param)}
    start_worker(**hold)
    notifier = Proc(["notify"], child_env(settings, **{**FAST, **hold}, CITYBRAIN_WEBHOOK_URLS=receiver.url),
                    tmp_path / "notifier.log")
    api = start_api()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
    yield api
    notifier.stop()


@pytest.mark.parametrize("stack, cause_first", [(HOLD_S, True), (3600, False)], indirect=["stack"],
                         ids=["cause-first", "cause-after-its-effects"])
def test_a_feeder_outage_and_the_devices_it_powers_are_one_incident(
        settings: Settings, stack: Api, receiver: Receiver, cause_first: bool) -> None:
    api = stack
    grid = feeder_events()
    if cause_first:
        produce(settings, settings.topics.events("grid"), event_records(grid, "feeder_id"))
        # Its incident is open before any device's alert exists: the detector's, later than
        # the gates' by more than the hold-back, must not release them to an area incident.
        wait_for(lambda: api.get("/api/v1/incidents").json()["incidents"], timeout=60)
    produce(settings, settings.topics.events("gate"), event_records(gate_events(), "gate_id"))
    produce(settings, settings.topics.events("traffic"), event_records(traffic_events(), "sensor_id"))
    gates = wait_for(lambda: (lambda a: a if len(a) == 3 else None)(alerts(api, "gate.offline")), timeout=60)
    assert {a["entity"] for a in gates} == {g["id"] for g in POWERED}
    (road,) = wait_for(lambda: alerts(api, "traffic.offline"), timeout=60)
    assert (road["entity"], road["severity"], road["area"]) == ("T-0001", "minor", DETECTOR_AREA)
    assert road["started_at"] == "2026-11-21T00:07:00.000+00:00"  # its last reading at 00:04, + 180 s
    offline = gates + [road]
    if not cause_first:
        produce(settings, settings.topics.events("grid"), event_records(grid, "feeder_id"))
    (outage,) = wait_for(lambda: alerts(api, "grid.outage"), timeout=60)

    def grouped() -> list[dict[str, Any]] | None:
        found = api.get("/api/v1/incidents").json()["incidents"]
        return found if found and len(found[0]["children"]) == 4 else None
    (incident,) = wait_for(grouped, timeout=30)
    assert incident["id"] == incident_id("feeder_outage", outage["id"])
    assert (incident["kind"], incident["cause"], incident["status"], incident["severity"]) == (
        "feeder_outage", outage["id"], "open", "critical")
    assert sorted(incident["children"]) == sorted(a["id"] for a in offline)
    assert incident["area"] == AREA
    one = api.get(f"/api/v1/incidents/{incident['id']}").json()
    assert {a["entity"] for a in one["alerts"]} == {"F-0001", "G-0001", "G-0002", "G-0003", "T-0001"}
    assert api.get("/api/v1/incidents", params={"area": "太平角社区"}).json()["total"] == 0
    assert api.get("/api/v1/incidents/nope").status_code == 404

    # Integrations hear of the incident, once, and of none of its alerts by themselves,
    # also after the alerts' hold-back has passed; the incident waited its own hold-back,
    # so the first notification already counts the devices.
    wait_for(receiver.statuses, timeout=HOLD_S + 30)
    time.sleep(HOLD_S + 3)
    told = [n for n in receiver.statuses() if "case" not in n[0]]  # its case is told too (test_cases_stack)
    assert told == [('{}:{alertname="incident.feeder_outage", district="市南区"}', "firing",
                     [(incident["id"], "firing")])]
    entry = next(p for _, p in receiver.received if "incident" in p["groupKey"])["alerts"][0]
    assert entry["annotations"]["summary"] == "feeder F-0001 outage: 4 devices offline"
    assert entry["generatorURL"].endswith(f"/api/v1/incidents/{incident['id']}")

    # In either order, the incident is a case for the feeder's grid cell, told once
    # (its escalation: test_cases_stack).
    case = wait_for(lambda: (lambda r: r.json() if r.status_code == 200 else None)(
        api.get(f"/api/v1/cases/{case_id(incident['id'])}")), timeout=30)
    assert (case["status"], case["level"], case["unit"], case["area"], case["incident"]) == (
        "dispatched", "grid_cell", "湛山社区第1网格网格员", AREA, incident["id"])

    def case_told() -> list[tuple[str, str]]:
        return [(e["labels"]["level"], e["status"]) for _, p in receiver.received for e in p["alerts"]
                if e["labels"]["alertname"] == "case"]
    wait_for(case_told, timeout=30)
    assert case_told() == [("grid_cell", "firing")]
