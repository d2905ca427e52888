"""The live feed of alert changes, over a WebSocket (contract §5), for dashboards and
machines that would otherwise poll. It checks its token itself: a browser can't set a
header on a WebSocket, so the token may come in the first message instead."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.alerts import format_position, parse_position, summary
from api.auth import Principal
from api.deps import PREFIX, ApiParts, Parts

router = APIRouter(prefix=PREFIX, tags=["alerts"])

AUTH_WAIT_S = 5.0  # a live client that sends no token within this long is closed
FIRST_FRAME_MAX = 4096  # bytes of a live client's first message: a token and a position
PING_S = 25.0  # a quiet feed pings, so a vanished client is noticed and let go


@dataclass(frozen=True)
class SignIn:
    who: Principal | None  # None: no token, or not a known one
    position: str | None  # the one the first message gave, if any


@router.websocket("/alerts/live")
async def live(websocket: WebSocket, parts: Parts, position: str | None = None) -> None:
    """Every alert change, pushed as `{"type": "alert", "position", "alert"}`.

    Authenticate with an `Authorization: Bearer` header, or (browsers can't set headers)
    with a first message `{"token": "..."}`; tokens in URLs end up in logs. The server
    first sends `{"type": "hello", "position"}`. To resume, give `?position=` (or
    `"position"` in that first message): the alerts changed since are sent (without
    positions), then `{"type": "caught_up", "position"}`. Keep the latest position
    received. A quiet feed sends `{"type": "ping"}` every 25 s.
    """
    await websocket.accept()
    signed_in = await _sign_in(websocket, parts)
    if signed_in is None:
        return
    who = signed_in.who
    if signed_in.position is not None:
        position = signed_in.position  # "" too: from the beginning
    if who is None or not who.may("viewer"):
        await websocket.close(4401 if who is None else 4403,
                              "unknown or missing token" if who is None else "needs the viewer role")
        return
    try:
        start = parse_position(position) if isinstance(position, str) else None
    except ValueError as exc:
        await websocket.close(4422, str(exc)[:120])
        return
    view = parts.views.alerts
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


async def _sign_in(websocket: WebSocket, parts: ApiParts) -> SignIn | None:
    """Who the client is and the position its first message gave, or None if the
    connection was closed here. A token comes in the Authorization
    header or in the first message, which must be JSON text of at most FIRST_FRAME_MAX
    bytes: anything else (binary, larger, not JSON) is closed with 4401."""
    book = parts.tokens
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return SignIn(book.principal_of(header[7:]), None)
    waiting = parts.live_waiting
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
    return SignIn(book.principal_of(token) if isinstance(token, str) else None,
                  position if isinstance(position, str) else None)


def _message(kind: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()
