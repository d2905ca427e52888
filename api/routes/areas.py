"""Area roll-ups: district → street → community → grid cell, with drill-down."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from api.auth import require
from api.cases import kpis
from streams.registry import LEVELS
from streams.topics import DOMAINS

router = APIRouter(prefix="/api/v1", tags=["areas"])


@router.get("/areas/{level}/{area_id}", dependencies=[Depends(require("viewer"))])
async def area(request: Request,
               level: Annotated[str, Path(examples=["district"],
                                          description="district, street, community or grid_cell")],
               area_id: Annotated[str, Path(examples=["市南区"])]) -> dict[str, Any]:
    """One area's newest window and last 15 minutes per domain, the number of devices it
    holds, its cases' KPIs (`cases`), and its children one level down (none for a grid
    cell) to drill into, each with its cases' closure rate."""
    if level not in LEVELS:
        raise HTTPException(404, f"unknown level {level!r}; one of {', '.join(LEVELS)}")
    views = request.app.state.views
    inside = [e for e in views.registry if e.get(level) == area_id]
    domains = {d: views.windows.summary(d, level, area_id, views.window_ms) for d in DOMAINS}
    if not inside and not any(domains.values()):
        raise HTTPException(404, f"no {level} {area_id!r} in the registry or the roll-ups")
    depth = LEVELS.index(level)
    children: list[dict[str, Any]] = []
    if depth + 1 < len(LEVELS):
        below = LEVELS[depth + 1]
        counts = Counter(e.get(below) or "unassigned" for e in inside)
        children = [{"level": below, "id": child, "entities": n} for child, n in sorted(counts.items())]
    now, cases = int(time.time() * 1000), request.app.state.cases
    for child in children:
        child["cases"] = kpis(cases.within(child["level"], child["id"]), now)
    return {"level": level, "id": area_id,
            "path": {lv: inside[0].get(lv) for lv in LEVELS[:depth]} if inside else {},
            "entities": dict(Counter(e["domain"] for e in inside)),
            "domains": domains, "cases": kpis(cases.within(level, area_id), now), "children": children}
