"""`citybrain api`: one HTTP API replica, served by uvicorn."""

from __future__ import annotations

import asyncio

import uvicorn

from api.app import create_app
from services import tokens
from services.config import ConfigError, Settings
from services.processes import port_in_use
from services.provision import ensure_topics


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
    uvicorn.run(app, host=settings.api_host, port=settings.api_port,
                log_level=settings.log_level.lower(), access_log=False)
    return 0
