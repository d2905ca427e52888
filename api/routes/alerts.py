"""Alerts for duty officers and machines: list, one with history, ack/resolve, live feed."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from starlette.requests import HTTPConnection

from api.alerts import AlertView, format_position, parse_position, summary
from api.auth import GRANTS, Principal, require
from api.bodies import body_schema, read_model
from api.routes.entities import parse_instant
from api.text import plain
from streams.alerting import command, input_key
from streams.registry import LEVELS
from streams.rules import SEVERITIES

router = APIRouter(prefix="/api/v1", tags=["alerts"])

STATUSES = ("firing", "acknowledged", "resolved")
APPLIED_WAIT_S = 5.0  # how long ack/resolve waits to see its change in the view
AUTH_WAIT_S = 5.0  # a live client that sends no token within this long is closed
FIRST_FRAME_MAX = 4096  # bytes of a live client's first message: a token and a position
PING_S = 25.0  # a quiet feed pings, so a vanished client is noticed and let go

_EXAMPLE = {
    "id": "3f2a9c0d1b4e5f60", "rule": "grid.overload", "domain": "grid", "entity": "F-0001",
    "severity": "critical", "status": "firing", "summary": "load 127% of rated (threshold 100%)", "value": 1.27,
    "threshold": 1.0, "started_at": "2026-11-21T00:01:00.000+00:00",
    "updated_at": "2026-11-21T00:04:00.000+00:00", "resolved_at": None, "count": 3,
    "acked_by": None, "area": {"district": "市南区", "street": "八大关街道", "community": "八大关社区",
                               "grid_cell": "八大关社区-03"}}


class Action(BaseModel):
    by: str = Field(min_length=1, max_length=100, description=(
        "who acts, as typed: a name or staff id. Recorded in the note; the action itself is "
        "recorded as the token's (its name, contract §5)"))
    note: str | None = Field(None, max_length=2000)

    @field_validator("by")
    @classmethod
    def plain_name(cls, v: str) -> str:
        return plain(v, "by")  # also refuses a lone surrogate (valid JSON, not text)

    @field_validator("note")
    @classmethod
    def plain_note(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else plain(v, "note", allow="\n\t")

    model_config = {"json_schema_extra": {"examples": [{"by": "值班员 王伟", "note": "抢修队已派出"}]}}


def _view(conn: HTTPConnection) -> AlertView:
    return conn.app.state.views.alerts


def _cursor(alert: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([alert["updated_at"], alert["id"]])).decode()


def _after(cursor: str) -> tuple[str, str]:
    try:
        updated_at, aid = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(updated_at, str) and isinstance(aid, str):
            return updated_at, aid
    except (ValueError, TypeError, orjson.JSONDecodeError):
        pass
    raise HTTPException(422, "cursor: not one this API handed out")


def _choices(name: str, value: str | None, allowed: tuple[str, ...]) -> set[str] | None:
    if value is None:
        return None
    chosen = set(value.split(","))
    if not chosen <= set(allowed):
        raise HTTPException(422, f"{name}: each of {', '.join(sorted(chosen - set(allowed)))[:200]} "
                                 f"is not one of {', '.join(allowed)}")
    return chosen


@router.get("/alerts", responses={200: {"content": {"application/json": {"example": {
                "alerts": [_EXAMPLE], "next_cursor": None, "total": 1}}}}})
async def list_alerts(
        request: Request, who: Annotated[Principal, Depends(require("viewer"))],
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
    statuses = _choices("status", status, STATUSES)
    severities = _choices("severity", severity, SEVERITIES)
    since_ms = parse_instant("since", since)
    after = _after(cursor) if cursor else None
    picked = []
    for a in _view(request).alerts.values():
        if (not who.sees(a["area"]) or (statuses and a["status"] not in statuses)
                or (severities and a["severity"] not in severities)
                or (domain and a["domain"] != domain) or (rule and a["rule"] != rule)
                or (area and area not in (a["area"].get(level) for level in LEVELS))
                or (since_ms is not None and _ms(a["updated_at"]) < since_ms)):
            continue
        picked.append(a)
    picked.sort(key=lambda a: (a["updated_at"], a["id"]), reverse=True)
    total = len(picked)
    if after is not None:
        picked = [a for a in picked if (a["updated_at"], a["id"]) < after]
    page = picked[:limit]
    return {"alerts": [summary(a) for a in page], "total": total,
            "next_cursor": _cursor(page[-1]) if len(picked) > limit else None}


def _ms(stamp: str) -> int:
    return parse_instant("updated_at", stamp) or 0


@router.get("/alerts/{alert_id}", responses={404: {"description": "no such alert"}})
async def get_alert(request: Request, alert_id: str,
                    who: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    """One alert with every transition of its history."""
    alert = _view(request).with_history(alert_id)
    if alert is None or not who.sees(alert["area"]):
        raise HTTPException(404, f"no alert {alert_id!r}")
    return alert


async def _act(request: Request, alert_id: str, kind: str, body: Action, who: Principal) -> Any:
    view = _view(request)
    alert = view.alerts.get(alert_id)
    if alert is None or not who.sees(alert["area"]):
        raise HTTPException(404, f"no alert {alert_id!r}")
    if alert["status"] == "resolved":
        raise HTTPException(409, f"alert {alert_id} is already resolved")
    if kind == "ack" and alert["status"] == "acknowledged":
        return view.with_history(alert_id)
    doc = command(kind, alert, who.identity, _note(body, who), int(time.time() * 1000))
    await request.app.state.producer.send(request.app.state.settings.topics.alert_inputs,
                                          [(input_key(alert["rule"], alert["entity"]), orjson.dumps(doc))])
    seq = alert["seq"]
    deadline = time.monotonic() + APPLIED_WAIT_S
    while view.alerts[alert_id]["seq"] == seq and time.monotonic() < deadline:
        await view.changed(deadline - time.monotonic())
    if view.alerts[alert_id]["seq"] == seq:
        return JSONResponse({"detail": "accepted; not applied yet", "alert": summary(alert)}, status_code=202)
    return view.with_history(alert_id)


def _note(body: Action, who: Principal) -> str | None:
    """The note as recorded: prefixed by the name typed, unless that is the token's own
    (a post's token is shared by the people on duty; the typed name says which one)."""
    if body.by == who.name:
        return body.note
    return f"{body.by}: {body.note}" if body.note else body.by


ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "accepted, not yet applied by the worker"}, 404: {"description": "no such alert"},
    409: {"description": "already resolved"}, 413: {"description": "body over 64 KiB"}}


@router.post("/alerts/{alert_id}/ack", openapi_extra=body_schema(Action), responses=ACTION_RESPONSES)
async def ack(request: Request, alert_id: str, who: Annotated[Principal, Depends(require("operator"))]) -> Any:
    """Acknowledge: a person has seen it and is on it. Body `{"by", "note"}`. Returns the
    alert once applied, `acked_by` naming the token's holder."""
    return await _act(request, alert_id, "ack", await read_model(request, Action), who)


@router.post("/alerts/{alert_id}/resolve", openapi_extra=body_schema(Action), responses=ACTION_RESPONSES)
async def resolve(request: Request, alert_id: str, who: Annotated[Principal, Depends(require("operator"))]) -> Any:
    """Resolve by hand; the alert stays resolved while its current condition lasts. Body
    `{"by", "note"}`; `resolved_by` names the token's holder."""
    return await _act(request, alert_id, "resolve", await read_model(request, Action), who)


@router.websocket("/alerts/live")
async def live(websocket: WebSocket, position: str | None = None) -> None:
    """Every alert change, pushed as `{"type": "alert", "position", "alert"}`.

    Authenticate with an `Authorization: Bearer` header, or (browsers can't set headers)
    with a first message `{"token": "..."}`; tokens in URLs end up in logs. The server
    first sends `{"type": "hello", "position"}`. To resume, give `?position=` (or
    `"position"` in that first message): the alerts changed since are sent (without
    positions), then `{"type": "caught_up", "position"}`. Keep the latest position
    received. A quiet feed sends `{"type": "ping"}` every 25 s.
    """
    await websocket.accept()
    signed_in = await _sign_in(websocket)
    if signed_in is None:
        return
    who, given = signed_in
    position = position if given is None else given  # "" too: from the beginning
    if who is None or "viewer" not in GRANTS[who.role]:
        await websocket.close(4401 if who is None else 4403,
                              "unknown or missing token" if who is None else "needs the viewer role")
        return
    try:
        start = parse_position(position) if isinstance(position, str) else None
    except ValueError as exc:
        await websocket.close(4422, str(exc)[:120])
        return
    view = _view(websocket)
    feed = view.subscribe()  # before the replay: a change during it is sent twice, never lost
    try:
        await websocket.send_text(_message("hello", position=format_position(view.position)))
        if start is not None:
            for alert in view.since(start):
                if who.sees(alert["area"]):
                    await websocket.send_text(_message("alert", alert=summary(alert)))
            await websocket.send_text(_message("caught_up", position=format_position(view.position)))
        # Listen too: a client that leaves is let go at once, not at the next ping (which
        # would also hold up a graceful shutdown of the API).
        left = asyncio.ensure_future(websocket.receive())
        while not feed.overflowed or not feed.queue.empty():
            message = asyncio.ensure_future(feed.queue.get())
            await asyncio.wait({message, left}, timeout=PING_S, return_when=asyncio.FIRST_COMPLETED)
            if left.done() and left.result()["type"] == "websocket.disconnect":
                message.cancel()
                return
            if left.done():
                left = asyncio.ensure_future(websocket.receive())  # clients have nothing to say
            if not message.done():
                message.cancel()
                await websocket.send_text(_message("ping"))
            elif who.sees(message.result()[0]):
                await websocket.send_text(message.result()[1])
        await websocket.close(1013, "client too slow; reconnect with your last position")
    except WebSocketDisconnect:
        pass
    finally:
        view.unsubscribe(feed)


class Waiting:
    """Live clients connected but not yet authenticated, at most `limit` at a time: each
    may hold up to AUTH_WAIT_S and a first frame, and costs a token check."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


async def _sign_in(websocket: WebSocket) -> tuple[Principal | None, str | None] | None:
    """The client's principal (None: no valid token) and the position its first message
    gave, or None if the connection was closed here. A token comes in the Authorization
    header or in the first message, which must be JSON text of at most FIRST_FRAME_MAX
    bytes: anything else (binary, larger, not JSON) is closed with 4401."""
    book = websocket.app.state.tokens
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return book.principal_of(header[7:]), None
    waiting: Waiting = websocket.app.state.live_waiting
    if not waiting.enter():
        await websocket.close(1013, "too many connections waiting to authenticate; retry later")
        return None
    try:
        message = await asyncio.wait_for(websocket.receive(), AUTH_WAIT_S)
    except asyncio.TimeoutError:
        message = {"type": "websocket.receive"}  # said nothing: no token
    finally:
        waiting.leave()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    try:
        if text is None or len(text.encode()) > FIRST_FRAME_MAX:
            raise ValueError
        first = orjson.loads(text)
    except (ValueError, orjson.JSONDecodeError):
        await websocket.close(4401, f'first message must be JSON text {{"token": ...}}, at most '
                                    f"{FIRST_FRAME_MAX} bytes")
        return None
    token = first.get("token") if isinstance(first, dict) else None
    position = first.get("position") if isinstance(first, dict) else None
    return (book.principal_of(token) if isinstance(token, str) else None,
            position if isinstance(position, str) else None)


def _message(kind: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()
