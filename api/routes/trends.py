"""The city's vital signs over the last hours, for the wall screen's charts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from api.deps import Parts, router

viewing = router("viewer", "overview")


@viewing.get("/trends")
async def trends(parts: Parts,
                 hours: Annotated[int, Query(ge=1, le=24, description="how many hours back")] = 6) -> dict[str, Any]:
    """Per domain and vital sign, one value per closed city window (null where none) over
    the last `hours` up to the newest window (event time), and `day_before`: the same
    windows 24 hours earlier, where the rollups topic still holds them."""
    return parts.trends.series(hours)
