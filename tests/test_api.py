"""The HTTP API skeleton against a real API process reading real topics."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.config import Settings
from tests.conftest import Api, Proc, event_records, produce, wait_for
from tests.test_ingest import grid


def test_health_and_readiness_need_no_token(api: Api) -> None:
    assert api.get("/healthz", token=None).json() == {"status": "ok"}
    ready = wait_for(lambda: (r := api.get("/readyz", token=None)).status_code == 200 and r)
    assert all(ready.json()["views"].values())


@pytest.mark.parametrize("token, status", [(None, 401), ("nope", 401), ("ti", 403), ("tv", 200),
                                           ("to", 200), ("ta", 200)])
def test_overview_auth(api: Api, token: str | None, status: int) -> None:
    r = api.get("/api/v1/overview", token=token)
    assert r.status_code == status
    if status != 200:
        assert isinstance(r.json()["detail"], str)


def test_overview_and_metrics_reflect_what_the_workers_processed(
        settings: Settings, worker: Proc, api: Api) -> None:
    produce(settings, settings.topics.events("grid"),
            event_records([grid(i) for i in range(25)], "feeder_id") + [(b"x", b"garbage")])
    wait_for(lambda: api.get("/api/v1/overview").json()["domains"]["grid"]["events"] == 25, timeout=60)
    grid_now = api.get("/api/v1/overview").json()["domains"]["grid"]
    assert grid_now["rejected"] == 1 and grid_now["latest_event_ts"] is not None
    metrics = api.get("/metrics", token=None).text
    assert 'citybrain_events_total{domain="grid",outcome="valid"} 25.0' in metrics
    assert 'citybrain_events_total{domain="grid",outcome="rejected"} 1.0' in metrics
    assert 'citybrain_http_requests_total{method="GET",route="/api/v1/overview",status="200"}' in metrics
    assert 'citybrain_deadletters_total{domain="grid",reason="invalid"} 1.0' in metrics
    assert 'citybrain_processing_latency_seconds_count{domain="grid"} 26.0' in metrics  # every record
    for family in ("citybrain_consumer_lag", "citybrain_window_closes_total", "citybrain_alerts_open"):
        assert family in metrics


def test_registry_topic_feeds_the_api(settings: Settings, api: Api) -> None:
    entity = {"id": "F-0001", "domain": "grid", "district": "市南区", "street": "湛山街道",
              "community": "湛山社区", "grid_cell": "湛山社区第1网格", "rated_kw": 5000}
    produce(settings, settings.topics.registry, [(b"F-0001", orjson.dumps(entity))])
    wait_for(lambda: api.get("/api/v1/overview").json()["entities"] == 1)


def test_openapi_describes_the_routes(api: Api) -> None:
    paths = api.get("/openapi.json", token=None).json()["paths"]
    assert {"/healthz", "/readyz", "/metrics", "/api/v1/overview"} <= set(paths)


ROUTES = [("GET", "/api/v1/overview", "viewer"),
          ("GET", "/api/v1/alerts", "viewer"),
          ("GET", "/api/v1/alerts/0123456789abcdef", "viewer"),
          ("POST", "/api/v1/alerts/0123456789abcdef/ack", "operator"),
          ("POST", "/api/v1/alerts/0123456789abcdef/resolve", "operator"),
          ("GET", "/api/v1/entities/traffic/T-0001", "viewer"),
          ("GET", "/api/v1/areas/district/市南区", "viewer"),
          ("POST", "/api/v1/ingest/traffic", "ingest"),
          ("GET", "/api/v1/incidents", "viewer"),
          ("GET", "/api/v1/incidents/0123456789abcdef", "viewer"),
          ("GET", "/api/v1/cases", "viewer"),
          ("GET", "/api/v1/cases/0123456789abcdef", "viewer"),
          *(("POST", f"/api/v1/cases/0123456789abcdef/{kind}", "operator")
            for kind in ("accept", "feedback", "verify", "close", "return"))]
TOKEN_OF = {"viewer": "tv", "operator": "to", "ingest": "ti"}
WRONG_ROLE = {"viewer": "ti", "operator": "tv", "ingest": "ta"}  # ingest stands apart: even admin may not ingest


@pytest.mark.parametrize("method, path, role", ROUTES)
def test_auth_matrix(api: Api, method: str, path: str, role: str) -> None:
    import httpx

    def call(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, api.url + path, headers=headers, json=[], timeout=10)

    assert call(None).status_code == 401
    assert call("not-a-token").status_code == 401
    assert call(WRONG_ROLE[role]).status_code == 403
    right = call(TOKEN_OF[role])
    assert right.status_code not in (401, 403) and right.status_code < 500
    assert all(isinstance(call(t).json()["detail"], str) for t in (None, "x", WRONG_ROLE[role]))
    if role != "ingest":  # a token limited to an area has its role's rights there (tests/test_cases_stack.py)
        scoped = call("tc" if role == "operator" else "tz")
        assert scoped.status_code not in (401, 403) and scoped.status_code < 500


def post(api: Api, path: str, body: bytes, token: str = "ti") -> Any:
    import httpx

    return httpx.post(api.url + path, content=body, timeout=10,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def test_ingest_produces_valid_events_and_reports_each_rejected_one(
        settings: Settings, worker: Proc, api: Api) -> None:
    items = [grid(i) for i in range(5)] + [{**grid(9), "voltage_kv": -1}, {"type": "nope"}]
    r = post(api, "/api/v1/ingest/grid", orjson.dumps({"events": items}))
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (5, 2)
    assert [e["index"] for e in body["errors"]] == [5, 6]
    assert "voltage_kv" in body["errors"][0]["reason"]
    wait_for(lambda: api.get("/api/v1/overview").json()["domains"]["grid"]["events"] == 5, timeout=60)
    assert post(api, "/api/v1/ingest/grid", orjson.dumps([grid(1)])).json()["accepted"] == 1  # bare array


def test_ingest_refuses_what_it_cannot_read(settings: Settings, api: Api) -> None:
    assert post(api, "/api/v1/ingest/grid", b"{nope").status_code == 400
    assert post(api, "/api/v1/ingest/grid", b'{"a": 1}').status_code == 422
    assert post(api, "/api/v1/ingest/water", b"[]").status_code == 404
    too_many = orjson.dumps([grid(0)] * (settings.max_batch + 1))
    assert post(api, "/api/v1/ingest/grid", too_many).status_code == 413
    huge = b"[" + b" " * settings.max_body_bytes + b"]"
    assert post(api, "/api/v1/ingest/grid", huge).status_code == 413


def test_dashboard_shell_and_its_files_are_served_without_a_token(api: Api) -> None:
    page = api.get("/", token=None)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "City vital signs" in page.text and "/static/dashboard.js" in page.text
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert api.get(asset, token=None).status_code == 200
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # no CDN: offline networks


def test_rates_come_from_the_workers_reports_so_replicas_agree() -> None:
    from api.views import Vitals

    v = Vitals(span_ms=10_000)
    for t, n in [(0, 0), (5_000, 500), (12_000, 1_200), (20_000, 2_000)]:
        v.apply(b"grid/0", orjson.dumps({"domain": "grid", "partition": 0, "events": n, "updated_at": t}))
    v.apply(b"gate/1", orjson.dumps({"domain": "gate", "partition": 1, "events": 7, "updated_at": 1_000}))
    # Newest report at 20 s; the last grid report at or before 10 s is at 5 s with 500.
    assert v.rates() == {"gate": 0.0, "traffic": 0.0, "grid": 100.0}
