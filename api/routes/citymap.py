"""The wall screen's map and ranking: devices where they stand, areas by their trouble."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import HTTPException, Path, Query, Response

from api import citymap as city_map
from api.deps import ApiParts, Parts, router
from api.query import known_level
from streams.alerting import Alert

viewing = router("viewer", "map")


def _open_alerts(parts: ApiParts) -> list[Alert]:
    return [a for a in parts.views.alerts.alerts.values() if city_map.is_open(a)]


@viewing.get("/map", response_class=Response, responses={200: {"content": {"application/json": {}}}})
async def device_map(parts: Parts) -> Response:
    """Every registered device with coordinates: `devices` rows are `[id, domain, lat, lon,
    path, state]`, `path` an index into `paths` (district, street, community, grid cell),
    `state` an index into `states` (normal, alerting, silent). `version` is the registry's:
    while `/map/states` reports the same one, the rows stand and only states change."""
    # Encoded directly: FastAPI's generic encoder walks each of 20,000 rows' values.
    body = city_map.snapshot(parts.placements, _open_alerts(parts))
    return Response(orjson.dumps(body), media_type="application/json")


@viewing.get("/map/states")
async def device_states(parts: Parts) -> dict[str, Any]:
    """The devices that are not normal, by state: the small answer a drawn map polls."""
    return city_map.state_changes(parts.views.registry, _open_alerts(parts))


@viewing.get("/map/areas/{level}")
async def ranking(parts: Parts,
                  level: Annotated[str, Path(examples=["street"],
                                             description="district, street, community or grid_cell")],
                  within: Annotated[str | None, Query(max_length=200, examples=["district:市南区"],
                                                      description="only areas inside this one: level:area")] = None,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    """The areas of one level ranked by trouble, worst first: most open alerts of the most
    severe kind, then of the next, then most silent and alerting devices. Each with its
    devices by state and domain and its open alerts by severity."""
    known_level(level)
    try:
        inside = city_map.parse_within(within)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    rows = city_map.ranking(parts.views.registry, _open_alerts(parts), level, inside)
    return {"level": level, "within": within, "total": len(rows), "areas": rows[:limit]}
