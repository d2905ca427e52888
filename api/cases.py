"""The cases read model: the latest state of every case (contract §8), from the compacted
cases topic, read from its beginning by every API replica."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson


class CaseView:
    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            case = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(case, dict) or not isinstance(case.get("id"), str):
            return
        held = self.cases.get(case["id"])
        if held is not None and held.get("seq", 0) >= case.get("seq", 0):
            return  # a worker's replay repeats a state already read
        self.cases[case["id"]] = case
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        """Wait until any case changes (or the timeout passes)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
