"""Incidents: alerts that share a cause, with their children (contract §8)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from api.alerts import summary
from api.auth import Principal, require
from api.incidents import IncidentView
from api.routes.alerts import _after, _choices, _cursor, _ms
from api.routes.entities import parse_instant
from streams.registry import LEVELS

router = APIRouter(prefix="/api/v1", tags=["incidents"])

STATUSES = ("open", "closed")
_EXAMPLE = {
    "id": "9c41d07a55e2b318", "kind": "feeder_outage", "status": "open", "cause": "3f2a9c0d1b4e5f60",
    "feeder": "F-0001", "children": ["a0b1c2d3e4f50617", "b1c2d3e4f5061728"],
    "area": {"district": "市南区", "street": "八大关街道", "community": "八大关社区", "grid_cell": "八大关社区-03"},
    "severity": "critical", "opened_at": "2026-11-21T00:01:00.000+00:00", "closed_at": None,
    "updated_at": "2026-11-21T00:03:00.000+00:00", "seq": 3}


def _view(request: Request) -> IncidentView:
    return request.app.state.incidents


@router.get("/incidents", responses={200: {"content": {"application/json": {"example": {
                "incidents": [_EXAMPLE], "next_cursor": None, "total": 1}}}}})
async def list_incidents(
        request: Request, who: Annotated[Principal, Depends(require("viewer"))],
        status: Annotated[str | None, Query(description="comma-separated: open, closed")] = None,
        area: Annotated[str | None, Query(max_length=200, description="a district, street, community or grid cell")] = None,
        since: Annotated[str | None, Query(description="updated at or after: RFC 3339 or epoch ms")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Incidents, most recently updated first, `limit` per page; follow `next_cursor`."""
    statuses = _choices("status", status, STATUSES)
    since_ms = parse_instant("since", since)
    after = _after(cursor) if cursor else None
    picked = [i for i in _view(request).incidents.values()
              if who.sees(i["area"]) and not ((statuses and i["status"] not in statuses)
                      or (area and area not in (i["area"].get(level) for level in LEVELS))
                      or (since_ms is not None and _ms(i["updated_at"]) < since_ms))]
    picked.sort(key=lambda i: (i["updated_at"], i["id"]), reverse=True)
    total = len(picked)
    if after is not None:
        picked = [i for i in picked if (i["updated_at"], i["id"]) < after]
    page = picked[:limit]
    return {"incidents": page, "total": total,
            "next_cursor": _cursor(page[-1]) if len(picked) > limit else None}


@router.get("/incidents/{incident_id}", responses={404: {"description": "no such incident"}})
async def get_incident(request: Request, incident_id: str,
                       who: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    """One incident, with its cause and child alerts as they are now (`alerts`)."""
    incident = _view(request).incidents.get(incident_id)
    if incident is None or not who.sees(incident["area"]):
        raise HTTPException(404, f"no incident {incident_id!r}")
    alerts = request.app.state.views.alerts.alerts
    members = [incident["cause"]] * (incident["cause"] is not None) + incident["children"]
    return {**incident, "alerts": [summary(alerts[a]) for a in members if a in alerts and who.sees(alerts[a]["area"])]}
