"""One entity's windows: what a duty officer opens when a gate, detector or feeder alarms."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import HTTPException, Path, Query

from api.deps import Parts, router
from api.query import instant, known_domain
from streams.windows import recent

viewing = router("viewer", "entities")

HOUR_MS = 3_600_000
SLIDING = {"last_5m": 5, "last_15m": 15}


@viewing.get("/entities/{domain}/{entity_id}")
async def entity(parts: Parts,
                 domain: Annotated[str, Path(examples=["grid"], description="gate, traffic or grid")],
                 entity_id: Annotated[str, Path(examples=["F-0001"])],
                 from_: str | None = Query(None, alias="from", description="RFC 3339 or epoch ms"),
                 to: str | None = Query(None, description="RFC 3339 or epoch ms")) -> dict[str, Any]:
    """Windows of one entity whose start lies in [from, to), with their figures, and sliding
    views over the last 5 and 15 minutes of its data. Without `to`, the range ends at the
    entity's newest window (event time), so a replayed or simulated past is shown too;
    without `from`, it starts an hour before `to`."""
    known_domain(domain)
    views = parts.views
    windows = views.windows.entity(domain, entity_id)
    info = views.registry.get(entity_id)
    if not windows and info is None:
        raise HTTPException(404, f"no {domain} entity {entity_id!r} in the registry or the windows")
    newest_end = max(windows) + views.window_ms if windows else int(time.time() * 1000)
    end = instant("to", to) or newest_end
    start = instant("from", from_) or end - HOUR_MS
    if start >= end:
        raise HTTPException(422, "from must be before to")
    aggs = {ws: w["agg"] for ws, w in windows.items()}
    sliding = {name: recent(domain, aggs, newest_end - minutes * 60_000)
               for name, minutes in SLIDING.items()}
    return {
        "domain": domain, "entity": entity_id, "area": views.registry.area(entity_id),
        "registry": info, "from": start, "to": end,
        "windows": [{"start": ws, "end": w["window_end"], "closed": w["closed"],
                     "figures": w["agg"].figures(domain)}
                    for ws, w in sorted(windows.items()) if start <= ws < end],
        "sliding": sliding,
    }
