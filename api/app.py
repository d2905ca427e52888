"""The HTTP service: FastAPI routers over read models fed from Kafka."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from api.auth import Principal, TokenBook, Waiting
from api.cases import CaseView
from api.citymap import Placements
from api.deps import ApiParts
from api.docs import add_docs
from api.headers import SecurityHeaders, TrustedHosts
from api.incidents import IncidentView
from api.metrics import CaseCollector, HttpMetrics, ReadModelCollector
from api.producer import EventProducer
from api.routes import (alerts, areas, cases, citymap, entities, forecasts, health, incidents, ingest, live,
                        overview, trends)
from api.settings import ApiSettings
from api.trends import CityTrends
from api.views import ReadModels
from streams.topics import FETCH_MAX_WAIT_MS
from streams.topicview import TopicView


STATIC = Path(__file__).parent / "static"


def create_app(settings: ApiSettings, tokens: Mapping[str, Principal | str]) -> FastAPI:
    views = ReadModels(settings)
    producer = EventProducer(settings.bootstrap, settings.topics)
    city_trends = CityTrends(settings.window_s * 1000)
    trends_view = TopicView(settings.bootstrap, settings.topics.rollups, city_trends.apply)
    incident_view = IncidentView()
    incidents_feed = TopicView(settings.bootstrap, settings.topics.incidents, incident_view.apply,
                               fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    case_view = CaseView()
    cases_feed = TopicView(settings.bootstrap, settings.topics.cases, case_view.apply,
                           fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    registry = CollectorRegistry()
    registry.register(ReadModelCollector(views))
    registry.register(CaseCollector(case_view))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await views.start()
        await trends_view.start()
        await incidents_feed.start()
        await cases_feed.start()
        await producer.start()
        try:
            yield
        finally:
            await producer.stop()
            await cases_feed.stop()
            await incidents_feed.stop()
            await trends_view.stop()
            await views.stop()

    app = FastAPI(title="citybrain", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Live alerts and city vital signs for the command centre.")
    # The one thing kept on the app: routes reach it through api.deps.Parts, typed.
    app.state.parts = ApiParts(
        settings=settings, views=views, incidents=incident_view, cases=case_view, trends=city_trends,
        placements=Placements(views.registry), producer=producer, tokens=TokenBook(tokens),
        live_waiting=Waiting(settings.live_unauthenticated_max), metrics=registry)
    app.add_middleware(HttpMetrics, registry=registry)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad input back; input that isn't text (a lone
        # surrogate is valid JSON) can't be encoded, and echoing input helps nobody.
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()]})
    if settings.cors_origins:
        # Closed unless configured: a browser on another origin gets no CORS headers.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins.split(","),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    if settings.hosts:
        app.add_middleware(TrustedHosts, hosts=settings.hosts)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so on every answer
    add_docs(app)
    for router in (health.router, overview.viewing, alerts.viewing, alerts.acting, live.router,
                   incidents.viewing, cases.viewing, cases.acting, entities.viewing, areas.viewing,
                   forecasts.viewing, ingest.ingesting, citymap.viewing, trends.viewing):
        app.include_router(router)
    # The dashboard shell needs no token; every data call it makes carries one.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
