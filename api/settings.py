"""What the API reads of a deployment's settings (see streams/settings.py for why a
protocol): routes read it as `parts.settings` (api/deps.py)."""

from __future__ import annotations

from typing import Protocol

from streams.settings import Deployment


class ApiSettings(Deployment, Protocol):
    @property
    def cors_origins(self) -> str | None: ...
    @property
    def hosts(self) -> list[str]: ...
    @property
    def live_unauthenticated_max(self) -> int: ...
    @property
    def api_read_timeout_s(self) -> float: ...
    @property
    def window_history_min(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...
