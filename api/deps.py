"""What the routes depend on: the parts `create_app` built, as one typed object, and the
token check of each role, which a router puts on all of its routes at once.

A route takes `parts: Parts` for the read models, the producer and the settings, and
`who: Viewer` (or `Operator`) when it needs the token's principal, for its name or its
area. FastAPI runs a dependency once per request, so the router's check and the route's
`who` are one token check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from api.auth import Principal, TokenBook, Waiting
from api.cases import CaseView
from api.citymap import Placements
from api.incidents import IncidentView
from api.producer import EventProducer
from api.settings import ApiSettings
from api.trends import CityTrends
from api.views import ReadModels

PREFIX = "/api/v1"


@dataclass(frozen=True)
class ApiParts:
    """Everything a route reads or acts through, built once per app."""

    settings: ApiSettings
    views: ReadModels  # alerts, windows, vitals, the registry and the workers' forecasts
    incidents: IncidentView
    cases: CaseView
    trends: CityTrends
    placements: Placements  # the registry drawn as map rows
    producer: EventProducer  # ingested events and people's commands to Kafka
    tokens: TokenBook
    live_waiting: Waiting
    metrics: CollectorRegistry


def api_parts(conn: HTTPConnection) -> ApiParts:
    """The app's parts, for a request or a WebSocket (create_app keeps them on the app)."""
    return conn.app.state.parts


Parts = Annotated[ApiParts, Depends(api_parts)]

_bearer = HTTPBearer(auto_error=False)


def _require(role: str) -> Callable[..., Principal]:
    def check(parts: Parts, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        who = parts.tokens.principal_of(creds.credentials)
        if who is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if not who.may(role):
            raise HTTPException(403, f"this token's role ({who.role}) may not do this; needs {role}")
        return who

    check.__name__ = f"require_{role}"
    return check


# One check per role, made once: FastAPI knows a dependency by its function.
_CHECKS = {role: _require(role) for role in ("viewer", "operator", "ingest")}
Viewer = Annotated[Principal, Depends(_CHECKS["viewer"])]
Operator = Annotated[Principal, Depends(_CHECKS["operator"])]


def router(role: str, tag: str) -> APIRouter:
    """The routes of `tag` that need `role`, under /api/v1."""
    return APIRouter(prefix=PREFIX, tags=[tag], dependencies=[Depends(_CHECKS[role])])
