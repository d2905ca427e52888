"""Area roll-ups: district → street → community → grid cell, with drill-down."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

from fastapi import HTTPException, Path

from api.cases import kpis
from api.deps import Parts, router
from api.query import known_level
from streams.registry import LEVELS
from streams.topics import DOMAINS

viewing = router("viewer", "areas")


@viewing.get("/areas/{level}/{area_id}")
async def area(parts: Parts,
               level: Annotated[str, Path(examples=["district"],
                                          description="district, street, community or grid_cell")],
               area_id: Annotated[str, Path(examples=["市南区"])]) -> dict[str, Any]:
    """One area's newest window and last 15 minutes per domain, the number of devices it
    holds, its cases' KPIs (`cases`), and its children one level down (none for a grid
    cell) to drill into, each with its cases' closure rate."""
    known_level(level)
    views = parts.views
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
    now, cases = int(time.time() * 1000), parts.cases
    for child in children:
        child["cases"] = kpis(cases.within(child["level"], child["id"]), now)
    return {"level": level, "id": area_id,
            "path": {lv: inside[0].get(lv) for lv in LEVELS[:depth]} if inside else {},
            "entities": dict(Counter(e["domain"] for e in inside)),
            "domains": domains, "cases": kpis(cases.within(level, area_id), now), "children": children}
