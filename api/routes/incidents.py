"""Incidents: alerts that share a cause, with their children (contract §8)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Query

from api.alerts import summary
from api.deps import Parts, Viewer, router
from api.query import choices, in_area, instant, page

viewing = router("viewer", "incidents")

STATUSES = ("open", "closed")
_EXAMPLE = {
    "id": "9c41d07a55e2b318", "kind": "feeder_outage", "status": "open", "cause": "3f2a9c0d1b4e5f60",
    "feeder": "F-0001", "children": ["a0b1c2d3e4f50617", "b1c2d3e4f5061728"],
    "area": {"district": "市南区", "street": "八大关街道", "community": "八大关社区", "grid_cell": "八大关社区-03"},
    "severity": "critical", "opened_at": "2026-11-21T00:01:00.000+00:00", "closed_at": None,
    "updated_at": "2026-11-21T00:03:00.000+00:00", "seq": 3}


@viewing.get("/incidents", responses={200: {"content": {"application/json": {"example": {
                "incidents": [_EXAMPLE], "next_cursor": None, "total": 1}}}}})
async def list_incidents(
        parts: Parts, who: Viewer,
        status: Annotated[str | None, Query(description="comma-separated: open, closed")] = None,
        area: Annotated[str | None, Query(max_length=200, description="a district, street, community or grid cell")] = None,
        since: Annotated[str | None, Query(description="updated at or after: RFC 3339 or epoch ms")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Incidents, most recently updated first, `limit` per page; follow `next_cursor`."""
    statuses = choices("status", status, STATUSES)
    since_ms = instant("since", since)

    def wanted(i: dict[str, Any]) -> bool:
        return (who.sees(i["area"]) and in_area(area, i["area"]) and (not statuses or i["status"] in statuses)
                and (since_ms is None or (instant("updated_at", i["updated_at"]) or 0) >= since_ms))

    shown = page([i for i in parts.incidents.incidents.values() if wanted(i)], limit, cursor)
    return {"incidents": shown.items, "total": shown.total, "next_cursor": shown.next_cursor}


@viewing.get("/incidents/{incident_id}", responses={404: {"description": "no such incident"}})
async def get_incident(parts: Parts, incident_id: str, who: Viewer) -> dict[str, Any]:
    """One incident, with its cause and child alerts as they are now (`alerts`)."""
    incident = parts.incidents.incidents.get(incident_id)
    if incident is None or not who.sees(incident["area"]):
        raise HTTPException(404, f"no incident {incident_id!r}")
    alerts = parts.views.alerts.alerts
    members = [incident["cause"]] * (incident["cause"] is not None) + incident["children"]
    return {**incident, "alerts": [summary(alerts[a]) for a in members if a in alerts and who.sees(alerts[a]["area"])]}
