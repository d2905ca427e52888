"""Alerts end to end: events → detections → one alert per problem → API, live feed, archive.

A real worker and API on the embedded broker; the feeder's events are made so a rule
fires, persists and clears at known event times.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from services.config import Settings
from tests.conftest import Api, Proc, event_records, produce, read_all, wait_for

T0 = 1_795_219_200_000  # 2026-11-21T00:00:00Z
FEEDER = {"id": "F-0001", "domain": "grid", "name": "湛山 10kV 1号线", "district": "市南区",
          "street": "湛山街道", "community": "湛山社区", "grid_cell": "湛山社区第1网格",
          "rated_kw": 5000, "nominal_kv": 10.0}


def reading(t_s: int, **change: Any) -> dict[str, Any]:
    return {"type": "grid.measurement", "ts": T0 + t_s * 1000, "feeder_id": "F-0001", "load_kw": 2500.0,
            "voltage_kv": 10.1, "frequency_hz": 50.0, "breaker": "closed", **change}


def outage(start_s: int, seconds: int) -> list[dict[str, Any]]:
    return [reading(t, load_kw=0.0, voltage_kv=0.0, frequency_hz=0.0, breaker="open")
            for t in range(start_s, start_s + seconds, 10)]


def normal(start_s: int, seconds: int) -> list[dict[str, Any]]:
    return [reading(t) for t in range(start_s, start_s + seconds, 10)]


class Live:
    """A WebSocket client of /api/v1/alerts/live that keeps every message it gets."""

    def __init__(self, api: Api, token: str = "tv", position: str | None = None) -> None:
        url = api.url.replace("http://", "ws://") + "/api/v1/alerts/live"
        self.ws = connect(url, legacy=True)
        # "" is a position too: from the beginning, before any alert existed
        self.ws.send(orjson.dumps({"token": token, **({} if position is None else {"position": position})}).decode())
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for m in self.ws:
                self.messages.append(orjson.loads(m))
        except Exception:  # noqa: BLE001 - closed by either side
            pass
        self.closed = (self.ws.close_code, self.ws.close_reason)

    def alerts(self) -> list[dict[str, Any]]:
        return [m["alert"] for m in self.messages if m["type"] == "alert"]

    def close(self) -> None:
        self.ws.close()


def act(api: Api, alert_id: str, action: str, token: str = "to", **body: Any) -> httpx.Response:
    return httpx.post(f"{api.url}/api/v1/alerts/{alert_id}/{action}", json={"by": "值班员 王伟", **body},
                      headers={"Authorization": f"Bearer {token}"}, timeout=15)


def alerts(api: Api, **query: Any) -> list[dict[str, Any]]:
    return api.get("/api/v1/alerts", params=query).json()["alerts"]


@pytest.fixture
def stack(settings: Settings, start_worker: Callable[..., Proc], start_api: Callable[[], Api]) -> Api:
    produce(settings, settings.topics.registry, [(b"F-0001", orjson.dumps(FEEDER))])
    start_worker()
    api = start_api()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
    return api


def test_an_outage_becomes_one_alert_that_people_handle_and_that_survives_a_restart(
        settings: Settings, stack: Api, start_api: Callable[[], Api]) -> None:
    api = stack
    live = Live(api)
    wait_for(lambda: live.messages and live.messages[0]["type"] == "hello")
    hello = live.messages[0]["position"]
    grid = settings.topics.events("grid")
    produce(settings, grid, event_records(normal(0, 60) + outage(60, 120), "feeder_id"))

    firing = wait_for(lambda: alerts(api, status="firing", rule="grid.outage"), timeout=60)
    assert len(firing) == 1
    alert = firing[0]
    assert (alert["entity"], alert["severity"], alert["domain"]) == ("F-0001", "critical", "grid")
    assert alert["area"]["street"] == "湛山街道" and alert["started_at"].startswith("2026-11-21T00:01:00")
    assert alert["count"] >= 2  # re-reported while the breaker stayed open: one alert, counted
    wait_for(lambda: any(a["id"] == alert["id"] for a in live.alerts()), timeout=10)

    # People: a viewer may not acknowledge; an operator may, once.
    assert act(api, alert["id"], "ack", token="tv").status_code == 403
    acked = act(api, alert["id"], "ack", note="抢修队已派出")
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert acked.json()["acked_by"] == "值班长"  # the token's name; the typed one is in the note
    assert act(api, alert["id"], "ack").json()["status"] == "acknowledged"  # idempotent
    lone_surrogate = httpx.post(f"{api.url}/api/v1/alerts/{alert['id']}/resolve", content=rb'{"by": "\ud800"}',
                                headers={"Authorization": "Bearer to", "Content-Type": "application/json"})
    assert lone_surrogate.status_code == 422  # valid JSON, but not text
    wait_for(lambda: any(a["status"] == "acknowledged" for a in live.alerts()), timeout=10)

    # The breaker closes: the alert resolves by itself after the clear time (30 s).
    produce(settings, grid, event_records(normal(180, 60), "feeder_id"))
    resolved = wait_for(lambda: alerts(api, status="resolved", rule="grid.outage"), timeout=60)[0]
    assert resolved["id"] == alert["id"] and resolved["resolved_at"].startswith("2026-11-21T00:03:30")
    assert act(api, alert["id"], "resolve").status_code == 409

    # The same events again (a gateway resending its buffer): no second alert.
    produce(settings, grid, event_records(outage(60, 120) + normal(180, 60), "feeder_id"))
    time.sleep(5)
    assert [a["id"] for a in alerts(api, rule="grid.outage")] == [alert["id"]]

    history = api.get(f"/api/v1/alerts/{alert['id']}").json()["history"]
    assert [(h["action"], h["by"]) for h in history] == [
        ("fired", "system"), ("acknowledged", "值班长"), ("resolved", "system")]

    # A client that was away resumes from its position and gets what it missed.
    back = Live(api, position=hello)
    wait_for(lambda: any(m["type"] == "caught_up" for m in back.messages), timeout=10)
    assert [a["status"] for a in back.alerts() if a["id"] == alert["id"]] == ["resolved"]
    last = [m["position"] for m in live.messages if m.get("position")][-1]
    live.close()
    back.close()

    # A restarted API rebuilds its view: the alert and every transition are still there,
    # and a client that reconnects with its last position gets what changed meanwhile.
    api.proc.stop()
    produce(settings, grid, event_records(outage(3600, 60), "feeder_id"))  # an hour later: a new alert
    again = start_api()
    wait_for(lambda: again.get("/readyz", token=None).status_code == 200, timeout=60)
    assert again.get(f"/api/v1/alerts/{alert['id']}").json()["history"] == history
    resumed = Live(again, position=last)
    wait_for(lambda: any(a["id"] != alert["id"] and a["status"] == "firing" for a in resumed.alerts()),
             timeout=60)
    assert alert["id"] not in {a["id"] for a in resumed.alerts()}  # nothing it had already
    resumed.close()
    overview = again.get("/api/v1/overview").json()
    assert overview["open_alerts"]["total"] == 1
    metrics = again.get("/metrics", token=None).text
    assert 'citybrain_alerts{severity="critical",status="resolved"} 1.0' in metrics


def test_alert_list_filters_and_pages(settings: Settings, stack: Api) -> None:
    api = stack
    produce(settings, settings.topics.alerts, [
        (f"a{i:02d}".encode(), orjson.dumps({
            "id": f"a{i:02d}", "rule": "grid.voltage" if i % 2 else "grid.overload", "domain": "grid",
            "entity": f"F-{i:04d}", "severity": "major" if i % 3 else "critical",
            "status": "firing" if i < 10 else "resolved", "summary": "s", "value": 1.0, "threshold": 1.0,
            "started_at": "2026-11-21T00:00:00+00:00", "updated_at": f"2026-11-21T00:{i:02d}:00+00:00",
            "resolved_at": None, "count": 1, "acked_by": None, "seq": 1, "history": [],
            "area": {"district": "市南区" if i < 5 else "崂山区", "street": "s", "community": "c",
                     "grid_cell": "g"}})) for i in range(25)])
    wait_for(lambda: api.get("/api/v1/alerts").json()["total"] == 25)
    assert {a["id"] for a in alerts(api, status="firing", area="市南区")} == {f"a{i:02d}" for i in range(5)}
    assert {a["id"] for a in alerts(api, severity="critical", rule="grid.overload")} == {
        f"a{i:02d}" for i in range(0, 25, 6)}
    assert len(alerts(api, since="2026-11-21T00:20:00Z")) == 5
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/alerts", params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        seen += [a["id"] for a in page["alerts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"a{i:02d}" for i in reversed(range(25))]  # newest first, each once
    for bad in ({"status": "burning"}, {"limit": 0}, {"cursor": "nope"}, {"since": "yesterday"}):
        r = api.get("/api/v1/alerts", params=bad)
        assert r.status_code == 422 and isinstance(r.json()["detail"], (str, list))
    assert api.get("/api/v1/alerts/nope").status_code == 404


def test_the_live_feed_needs_a_viewer_token(stack: Api) -> None:
    for token, code in (("nope", 4401), ("ti", 4403)):
        client = Live(stack, token=token)
        wait_for(lambda: client.closed is not None, timeout=10)
        assert client.closed[0] == code
