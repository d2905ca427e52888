"""City vital signs (城市运行体征): what the wall screen shows first."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from api.auth import require

router = APIRouter(prefix="/api/v1", tags=["overview"])


@router.get("/overview", dependencies=[Depends(require("viewer"))])
async def overview(request: Request) -> dict[str, Any]:
    vitals = request.app.state.views.vitals
    totals = vitals.totals()
    rates = vitals.rates()
    views = request.app.state.views
    domains = {d: {**t, "events_per_s": rates[d],
                   "city": views.windows.summary(d, "city", "city", views.window_ms)}
               for d, t in totals.items()}
    open_alerts = views.alerts.open_counts()
    for d in domains:
        domains[d]["open_alerts"] = open_alerts["by_domain"].get(d, 0)
    return {"generated_at": int(time.time() * 1000), "domains": domains,
            "entities": len(views.registry), "open_alerts": open_alerts}
