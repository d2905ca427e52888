"""Forecasts where people look: a device's or an area's figure over the next hour."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from api.auth import require
from api.forecasts import DEFAULT_FIGURE, forecast
from api.routes import known_domain
from streams.registry import LEVELS

router = APIRouter(prefix="/api/v1", tags=["forecasts"])

Steps = Annotated[int, Query(ge=1, le=240, description="windows ahead (one-minute windows: minutes)")]
Figure = Annotated[str | None, Query(description="a figure of the domain's windows; default: passes, volume "
                                                 "or load_kw_mean")]


async def _answer(request: Request, domain: str, windows: dict[int, dict[str, Any]], figure: str | None,
                  steps: int) -> dict[str, Any]:
    figure = figure or DEFAULT_FIGURE[domain]
    try:
        # Learning a day of windows takes a few hundred ms: off the event loop.
        return await asyncio.to_thread(forecast, domain, windows, figure, request.app.state.views.window_ms, steps)
    except KeyError:
        raise HTTPException(422, f"figure {figure!r}: not a figure of {domain} windows") from None


@router.get("/forecasts/{domain}/{entity_id}", dependencies=[Depends(require("viewer"))])
async def entity_forecast(request: Request,
                          domain: Annotated[str, Path(examples=["grid"], description="gate, traffic or grid")],
                          entity_id: Annotated[str, Path(examples=["F-0001"])],
                          figure: Figure = None, steps: Steps = 60) -> dict[str, Any]:
    """One device's figure for the next `steps` windows after its newest closed one, with
    80 % prediction intervals, learnt from its window history (api/forecasts.py)."""
    views = request.app.state.views
    windows = views.windows.entity(known_domain(domain), entity_id)
    if not windows and views.registry.get(entity_id) is None:
        raise HTTPException(404, f"no {domain} entity {entity_id!r} in the registry or the windows")
    return {"domain": domain, "entity": entity_id, **await _answer(request, domain, windows, figure, steps)}


@router.get("/forecasts/areas/{level}/{area_id}", dependencies=[Depends(require("viewer"))])
async def area_forecast(request: Request,
                        level: Annotated[str, Path(examples=["district"])],
                        area_id: Annotated[str, Path(examples=["市南区"])],
                        domain: Annotated[str, Query(examples=["traffic"])] = "traffic",
                        figure: Figure = None, steps: Steps = 60) -> dict[str, Any]:
    """An area's total figure for the next `steps` windows, as for a device."""
    if level not in LEVELS:
        raise HTTPException(404, f"unknown level {level!r}; one of {', '.join(LEVELS)}")
    windows = request.app.state.views.windows.area(known_domain(domain), level, area_id)
    if not windows:
        raise HTTPException(404, f"no {domain} roll-ups for {level} {area_id!r}")
    return {"domain": domain, "level": level, "area": area_id,
            **await _answer(request, domain, windows, figure, steps)}
