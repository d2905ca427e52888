"""What the layers read of a deployment's settings, declared where they are read.

The settings themselves (`services.config.Settings`: environment variables, flags and
their validation) belong to the processes, the top layer. The topology and the read
models only name the members they use, as protocols: `streams/` and `api/` then import
nothing above them, and `Settings` satisfies both without knowing of them (a change to
a member's name or type fails type checking where it is read, not at a worker's start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from streams.cases import Limits
from streams.rules import RuleBook
from streams.topics import Topics


class Deployment(Protocol):
    """Where the city's topics are and how events are cut: read by workers and the API."""

    @property
    def bootstrap(self) -> str: ...
    @property
    def topics(self) -> Topics: ...
    @property
    def partitions(self) -> int: ...
    @property
    def window_s(self) -> int: ...
    @property
    def max_batch(self) -> int: ...
    @property
    def clock_skew_s(self) -> float: ...
    @property
    def registry_file(self) -> Path | None: ...
    @property
    def data_dir(self) -> Path: ...


class StreamSettings(Deployment, Protocol):
    """What the Faust app and its agents read (streams/app.py, streams/*agent*.py)."""

    @property
    def session_timeout_s(self) -> float: ...
    @property
    def store(self) -> str: ...
    @property
    def lateness_s(self) -> int: ...
    @property
    def alert_flap_s(self) -> float: ...
    @property
    def alert_escalate_s(self) -> float: ...
    @property
    def incident_hold_s(self) -> float: ...
    @property
    def incident_area_min(self) -> int: ...
    @property
    def outlook(self) -> str: ...
    def rule_book(self) -> RuleBook: ...
    def case_limits(self) -> Limits: ...
