"""Alerts for duty officers and machines: the list, one with its history, ack and resolve.
The live feed is api/routes/live.py."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import HTTPException, Query, Request

from api.actions import Action, applied, not_applied_yet, recorded_note
from api.alerts import summary
from api.bodies import body_schema, read_model
from api.auth import Principal
from api.deps import ApiParts, Operator, Parts, Viewer, router
from api.query import choices, in_area, instant, page
from streams.alerting import STATUSES, Alert, command, input_key
from streams.rules import SEVERITIES

viewing = router("viewer", "alerts")
acting = router("operator", "alerts")

_EXAMPLE = {
    "id": "3f2a9c0d1b4e5f60", "rule": "grid.overload", "domain": "grid", "entity": "F-0001",
    "severity": "critical", "status": "firing", "summary": "load 127% of rated (threshold 100%)", "value": 1.27,
    "threshold": 1.0, "started_at": "2026-11-21T00:01:00.000+00:00",
    "updated_at": "2026-11-21T00:04:00.000+00:00", "resolved_at": None, "count": 3,
    "acked_by": None, "area": {"district": "市南区", "street": "八大关街道", "community": "八大关社区",
                               "grid_cell": "八大关社区-03"}}


@viewing.get("/alerts", responses={200: {"content": {"application/json": {"example": {
                "alerts": [_EXAMPLE], "next_cursor": None, "total": 1}}}}})
async def list_alerts(
        parts: Parts, who: Viewer,
        status: Annotated[str | None, Query(description="comma-separated: firing, acknowledged, resolved")] = None,
        severity: Annotated[str | None, Query(description="comma-separated severities")] = None,
        domain: Annotated[str | None, Query(max_length=32)] = None,
        rule: Annotated[str | None, Query(max_length=64)] = None,
        area: Annotated[str | None, Query(max_length=200, description="a district, street, community or grid cell")] = None,
        since: Annotated[str | None, Query(description="updated at or after: RFC 3339 or epoch ms")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Alerts, most recently updated first, `limit` per page; follow `next_cursor`."""
    statuses = choices("status", status, STATUSES)
    severities = choices("severity", severity, SEVERITIES)
    since_ms = instant("since", since)

    def wanted(a: Alert) -> bool:
        return (who.sees(a["area"]) and in_area(area, a["area"])
                and (not statuses or a["status"] in statuses) and (not severities or a["severity"] in severities)
                and (not domain or a["domain"] == domain) and (not rule or a["rule"] == rule)
                and (since_ms is None or (instant("updated_at", a["updated_at"]) or 0) >= since_ms))

    shown = page([a for a in parts.views.alerts.alerts.values() if wanted(a)], limit, cursor)
    return {"alerts": [summary(a) for a in shown.items], "total": shown.total, "next_cursor": shown.next_cursor}


@viewing.get("/alerts/{alert_id}", responses={404: {"description": "no such alert"}})
async def get_alert(parts: Parts, alert_id: str, who: Viewer) -> dict[str, Any]:
    """One alert with every transition of its history."""
    alert = parts.views.alerts.with_history(alert_id)
    if alert is None or not who.sees(alert["area"]):
        raise HTTPException(404, f"no alert {alert_id!r}")
    return alert


async def _act(parts: ApiParts, alert_id: str, kind: Literal["ack", "resolve"], body: Action, who: Principal) -> Any:
    view = parts.views.alerts
    alert = view.alerts.get(alert_id)
    if alert is None or not who.sees(alert["area"]):
        raise HTTPException(404, f"no alert {alert_id!r}")
    if alert["status"] == "resolved":
        raise HTTPException(409, f"alert {alert_id} is already resolved")
    if kind == "ack" and alert["status"] == "acknowledged":
        return view.with_history(alert_id)
    doc = command(kind, alert, who.identity, recorded_note(body, who), int(time.time() * 1000))
    await parts.producer.send(parts.settings.topics.alert_inputs,
                              [(input_key(alert["rule"], alert["entity"]), orjson.dumps(doc))])
    if not await applied(lambda: view.alerts[alert_id]["seq"], alert["seq"], view.changed):
        return not_applied_yet("alert", summary(alert))
    return view.with_history(alert_id)


ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "accepted, not yet applied by the worker"}, 404: {"description": "no such alert"},
    409: {"description": "already resolved"}, 413: {"description": "body over 64 KiB"}}


@acting.post("/alerts/{alert_id}/ack", openapi_extra=body_schema(Action), responses=ACTION_RESPONSES)
async def ack(request: Request, parts: Parts, alert_id: str, who: Operator) -> Any:
    """Acknowledge: a person has seen it and is on it. Body `{"by", "note"}`. Returns the
    alert once applied, `acked_by` naming the token's holder."""
    body = await read_model(request, Action, parts.settings.api_read_timeout_s)
    return await _act(parts, alert_id, "ack", body, who)


@acting.post("/alerts/{alert_id}/resolve", openapi_extra=body_schema(Action), responses=ACTION_RESPONSES)
async def resolve(request: Request, parts: Parts, alert_id: str, who: Operator) -> Any:
    """Resolve by hand; the alert stays resolved while its current condition lasts. Body
    `{"by", "note"}`; `resolved_by` names the token's holder."""
    body = await read_model(request, Action, parts.settings.api_read_timeout_s)
    return await _act(parts, alert_id, "resolve", body, who)
