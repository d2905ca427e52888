"""The HTTP API skeleton against a real API process reading real topics."""

from __future__ import annotations

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


def test_registry_topic_feeds_the_api(settings: Settings, api: Api) -> None:
    entity = {"id": "F-0001", "domain": "grid", "district": "市南区", "street": "湛山街道",
              "community": "湛山社区", "grid_cell": "湛山社区第1网格", "rated_kw": 5000}
    produce(settings, settings.topics.registry, [(b"F-0001", orjson.dumps(entity))])
    wait_for(lambda: api.get("/api/v1/overview").json()["entities"] == 1)


def test_openapi_describes_the_routes(api: Api) -> None:
    paths = api.get("/openapi.json", token=None).json()["paths"]
    assert {"/healthz", "/readyz", "/metrics", "/api/v1/overview"} <= set(paths)
