"""The cases read model: the latest state of every case (contract §8), from the compacted
cases topic, read from its beginning by every API replica."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

import orjson

from streams.alerting import ms
from streams.cases import OPEN, overdue

# The KPIs of the area route and of /metrics (contract §8).
KPIS = ("opened", "closed", "closure_rate", "on_time_rate", "mean_accept_s", "mean_close_s", "overdue")


def kpis(cases: Iterable[dict[str, Any]], now_ms: int) -> dict[str, Any]:
    """The grid-management figures of some cases: how many were opened and closed, the
    share closed (案件办结率) and closed on time (never escalated, handled in time), the
    mean seconds from opening to acceptance and to closing, and how many are overdue now.
    Rates and means are None when there is nothing to divide."""
    cases = list(cases)
    closed = [c for c in cases if c["status"] == "closed"]
    accepted = [ms(c["accepted_at"]) - ms(c["opened_at"]) for c in cases if c.get("accepted_at")]
    took = [ms(c["closed_at"]) - ms(c["opened_at"]) for c in closed]
    return {"opened": len(cases), "closed": len(closed),
            "closure_rate": len(closed) / len(cases) if cases else None,
            "on_time_rate": sum(1 for c in closed if c.get("on_time")) / len(closed) if closed else None,
            "mean_accept_s": sum(accepted) / len(accepted) / 1000 if accepted else None,
            "mean_close_s": sum(took) / len(took) / 1000 if took else None,
            "overdue": sum(1 for c in cases if c["status"] in OPEN and overdue(c, now_ms))}


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

    def within(self, level: str, area: str) -> list[dict[str, Any]]:
        return [c for c in self.cases.values() if c["area"].get(level) == area]

    async def changed(self, timeout: float) -> None:
        """Wait until any case changes (or the timeout passes)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
