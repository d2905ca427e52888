"""City vital signs (城市运行体征): what the wall screen shows first."""

from __future__ import annotations

import time
from typing import Any

from api.deps import Parts, router

viewing = router("viewer", "overview")


@viewing.get("/overview")
async def overview(parts: Parts) -> dict[str, Any]:
    views = parts.views
    totals = views.vitals.totals()
    rates = views.vitals.rates()
    domains = {d: {**t, "events_per_s": rates[d],
                   "city": views.windows.summary(d, "city", "city", views.window_ms)}
               for d, t in totals.items()}
    open_alerts = views.alerts.open_counts()
    for d in domains:
        domains[d]["open_alerts"] = open_alerts["by_domain"].get(d, 0)
    return {"generated_at": int(time.time() * 1000), "domains": domains,
            "entities": len(views.registry), "open_alerts": open_alerts}
