"""Forecasts where people look: a device's or an area's figure over the next hour, learnt
from the window history on request; and the workers' outlook of every device series."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import HTTPException, Path, Query

from api.deps import Parts, router
from api.forecasts import forecast
from api.query import known_domain, known_level
from streams.outlook import DEFAULT_FIGURE, FIGURES, HORIZONS_S

viewing = router("viewer", "forecasts")

Steps = Annotated[int, Query(ge=1, le=240, description="windows ahead (one-minute windows: minutes)")]
Figure = Annotated[str | None, Query(description="a figure of the domain's windows; default: passes, volume "
                                                 "or load_kw_mean")]


async def _answer(window_ms: int, domain: str, windows: dict[int, dict[str, Any]], figure: str | None,
                  steps: int) -> dict[str, Any]:
    figure = figure or DEFAULT_FIGURE[domain]
    try:
        # Learning a day of windows takes a few hundred ms: off the event loop.
        return await asyncio.to_thread(forecast, domain, windows, figure, window_ms, steps)
    except KeyError:
        raise HTTPException(422, f"figure {figure!r}: not a figure of {domain} windows") from None


@viewing.get("/forecasts/{domain}/{entity_id}")
async def entity_forecast(parts: Parts,
                          domain: Annotated[str, Path(examples=["grid"], description="gate, traffic or grid")],
                          entity_id: Annotated[str, Path(examples=["F-0001"])],
                          figure: Figure = None, steps: Steps = 60) -> dict[str, Any]:
    """One device's figure for the next `steps` windows after its newest closed one, with
    80 % prediction intervals, learnt from its window history (api/forecasts.py); and
    `outlook`, the workers' forecast of it 15, 30 and 60 minutes ahead (api/outlook.py;
    null for a figure they do not forecast, or before they have learnt a step of it)."""
    views = parts.views
    windows = views.windows.entity(known_domain(domain), entity_id)
    if not windows and views.registry.get(entity_id) is None:
        raise HTTPException(404, f"no {domain} entity {entity_id!r} in the registry or the windows")
    answer = await _answer(views.window_ms, domain, windows, figure, steps)
    outlook = views.outlooks.get(domain, answer["figure"], entity_id)
    return {"domain": domain, "entity": entity_id, **answer, "outlook": outlook.doc() if outlook else None}


@viewing.get("/forecasts/{domain}")
async def outlook_ranking(parts: Parts,
                          domain: Annotated[str, Path(examples=["grid"], description="gate, traffic or grid")],
                          figure: Figure = None,
                          horizon_s: Annotated[int, Query(description="900, 1800 or 3600")] = 3600,
                          order: Annotated[str, Query(pattern="^(highest|lowest)$")] = "highest",
                          limit: Annotated[int, Query(ge=1, le=10_000)] = 50) -> dict[str, Any]:
    """The workers' outlook of every device of a domain (api/outlook.py): the `limit`
    devices whose forecast of `figure` at `horizon_s` is highest (or lowest: a road's
    speed), with the area of each; `total` counts the devices forecast. A device whose
    forecast is more than two steps older than the newest of the figure's (a device gone
    silent, or removed) is left out, and counted in `stale`."""
    domain = known_domain(domain)
    figure = figure or DEFAULT_FIGURE[domain]
    if horizon_s not in HORIZONS_S:
        raise HTTPException(422, f"horizon_s {horizon_s}: the workers forecast {', '.join(map(str, HORIZONS_S))} s ahead")
    if figure not in {f.name for f in FIGURES[domain]}:
        raise HTTPException(422, f"figure {figure!r}: the workers forecast {', '.join(f.name for f in FIGURES[domain])} "
                                 f"of {domain} devices")
    views = parts.views
    ranked = views.outlooks.ranked(domain, figure, horizon_s, order == "highest", limit)
    return {"domain": domain, "figure": figure, "horizon_s": horizon_s, "order": order, "total": ranked.total,
            "stale": ranked.stale, "devices": [{"entity": entity, "area": views.registry.area(entity), **o.doc()}
                                               for entity, o in ranked.top]}


@viewing.get("/forecasts/areas/{level}/{area_id}")
async def area_forecast(parts: Parts,
                        level: Annotated[str, Path(examples=["district"])],
                        area_id: Annotated[str, Path(examples=["市南区"])],
                        domain: Annotated[str, Query(examples=["traffic"])] = "traffic",
                        figure: Figure = None, steps: Steps = 60) -> dict[str, Any]:
    """An area's total figure for the next `steps` windows, as for a device."""
    known_level(level)
    windows = parts.views.windows.area(known_domain(domain), level, area_id)
    if not windows:
        raise HTTPException(404, f"no {domain} roll-ups for {level} {area_id!r}")
    return {"domain": domain, "level": level, "area": area_id,
            **await _answer(parts.views.window_ms, domain, windows, figure, steps)}
