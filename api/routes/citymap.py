"""The wall screen's map and ranking: devices where they stand, areas by their trouble."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from api import citymap as city_map
from api.auth import require
from streams.registry import LEVELS

router = APIRouter(prefix="/api/v1", tags=["map"])


def _open_alerts(request: Request) -> list[dict[str, Any]]:
    return [a for a in request.app.state.views.alerts.alerts.values() if city_map.is_open(a)]


@router.get("/map", dependencies=[Depends(require("viewer"))], response_class=Response,
            responses={200: {"content": {"application/json": {}}}})
async def device_map(request: Request) -> Response:
    """Every registered device with coordinates: `devices` rows are `[id, domain, lat, lon,
    path, state]`, `path` an index into `paths` (district, street, community, grid cell),
    `state` an index into `states` (normal, alerting, silent). `version` is the registry's:
    while `/map/states` reports the same one, the rows stand and only states change."""
    # Encoded directly: FastAPI's generic encoder walks each of 20,000 rows' values.
    body = city_map.snapshot(request.app.state.placements, _open_alerts(request))
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/map/states", dependencies=[Depends(require("viewer"))])
async def device_states(request: Request) -> dict[str, Any]:
    """The devices that are not normal, by state: the small answer a drawn map polls."""
    return city_map.state_changes(request.app.state.views.registry, _open_alerts(request))


@router.get("/map/areas/{level}", dependencies=[Depends(require("viewer"))])
async def ranking(request: Request,
                  level: Annotated[str, Path(examples=["street"],
                                             description="district, street, community or grid_cell")],
                  within: Annotated[str | None, Query(max_length=200, examples=["district:市南区"],
                                                      description="only areas inside this one: level:area")] = None,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    """The areas of one level ranked by trouble, worst first: most open alerts of the most
    severe kind, then of the next, then most silent and alerting devices. Each with its
    devices by state and domain and its open alerts by severity."""
    if level not in LEVELS:
        raise HTTPException(404, f"unknown level {level!r}; one of {', '.join(LEVELS)}")
    try:
        inside = city_map.parse_within(within)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    rows = city_map.ranking(request.app.state.views.registry, _open_alerts(request), level, inside)
    return {"level": level, "within": within, "total": len(rows), "areas": rows[:limit]}
