"""`citybrain api`: one HTTP API replica, served by uvicorn."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from api.app import create_app
from services import tokens
from services.config import ConfigError, Settings
from services.http_protocol import with_header_deadline
from services.processes import port_in_use
from services.provision import ensure_topics


WS_MAX_FRAME = 64 * 1024


def run_api(settings: Settings) -> int:
    book = tokens.configured(settings)
    if not book:
        raise ConfigError("no API tokens: set CITYBRAIN_API_TOKENS (token=role,...) or "
                          "CITYBRAIN_TOKEN_FILE")
    if port_in_use(settings.api_host, settings.api_port):
        raise ConfigError(f"api_port (CITYBRAIN_API_PORT): port {settings.api_port} on "
                          f"{settings.api_host} is already in use")
    asyncio.run(ensure_topics(settings))
    app = create_app(settings, book)
    config = uvicorn.Config(
        app, host=settings.api_host, port=settings.api_port, log_level=settings.log_level.lower(),
        access_log=False, http=with_header_deadline(settings.api_read_timeout_s),
        # Beyond this many open connections (live feeds included) a request gets a 503.
        limit_concurrency=settings.api_max_connections,
        # No client has more to say over the live feed than its first message, so a larger
        # frame closes the connection (1009) before it is buffered; the handler bounds the
        # first message tighter still (api.routes.live).
        ws_max_size=WS_MAX_FRAME, timeout_keep_alive=5)
    logging.getLogger("uvicorn.error").addFilter(NoFrames())  # after Config set up logging
    uvicorn.Server(config).run()
    return 0


class NoFrames(logging.Filter):
    """At debug the WebSocket protocol logs every frame, the live feed's token with them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.DEBUG and str(record.msg).startswith(("< ", "> ")))
