"""uvicorn's HTTP/1.1 protocol with a deadline for each request's headers.

uvicorn times out idle keep-alive connections, but a client that sends its headers a
byte at a time is held for as long as it keeps going (slowloris): enough of them and the
API has no connections left for the command centre. Here the headers of every request
must be complete within `timeout_s` of the connection (or of the previous response); a
slow body is bounded separately, where routes read it (api.bodies).

This is the one place that subclasses a uvicorn internal (`H11Protocol`, passed as
`uvicorn.Config(http=...)`); its hooks are the protocol's own callbacks.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadline(H11Protocol):
    def __init__(self, *args: Any, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_s = timeout_s
        self._deadline: asyncio.TimerHandle | None = None
        self._cycle_when_armed: object = None

    def _arm(self) -> None:
        self._disarm()
        self._cycle_when_armed = self.cycle
        self._deadline = self.loop.call_later(self.timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._cycle_when_armed:  # a request's headers arrived
            self._disarm()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        self._arm()  # before super(): it may start a pipelined request at once
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def with_header_deadline(timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`."""
    return functools.partial(HeaderDeadline, timeout_s=timeout_s)  # type: ignore[return-value]
