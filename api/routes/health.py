"""Liveness, readiness and metrics: unauthenticated, for probes and scrapers."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from api.deps import Parts
from api.metrics import exposition

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "views not caught up or broker unreachable"}})
async def readyz(parts: Parts) -> Response:
    views = parts.views.ready
    ok = bool(views) and all(views.values())
    return JSONResponse({"ready": ok, "views": views}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(parts: Parts) -> Response:
    return exposition(parts.metrics)
