"""The HTTP service: FastAPI routers over read models fed from Kafka."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from api.auth import TokenBook
from api.metrics import HttpMetrics, ReadModelCollector
from api.routes import areas, entities, health, overview
from api.views import ReadModels
from services.config import Settings


def create_app(settings: Settings, tokens: dict[str, str]) -> FastAPI:
    views = ReadModels(settings)
    registry = CollectorRegistry()
    registry.register(ReadModelCollector(views))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await views.start()
        try:
            yield
        finally:
            await views.stop()

    app = FastAPI(title="citybrain", version="0.1.0", lifespan=lifespan,
                  description="Live alerts and city vital signs for the command centre.")
    app.state.views = views
    app.state.tokens = TokenBook(tokens)
    app.state.metrics = registry
    app.add_middleware(HttpMetrics, registry=registry)
    app.include_router(health.router)
    app.include_router(overview.router)
    app.include_router(entities.router)
    app.include_router(areas.router)
    return app
