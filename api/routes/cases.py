"""Cases: the grid-management workflow (contract §8): list, one with history, and the
commands that move a case on, through Kafka to the case's partition like ack/resolve."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import HTTPException, Query, Request

from api.actions import Action, applied, not_applied_yet, recorded_note
from api.bodies import body_schema, read_model
from api.deps import Operator, Parts, Viewer, router
from api.query import choices, in_area, page
from streams.cases import COMMANDS, command, overdue
from streams.registry import LEVELS

viewing = router("viewer", "cases")
acting = router("operator", "cases")

STATUSES = ("dispatched", "accepted", "handled", "verified", "closed", "returned")
_EXAMPLE = {
    "id": "5d0c1e2f3a4b5c6d", "incident": "9c41d07a55e2b318", "alert": None, "status": "dispatched",
    "level": "community", "unit": "湛山社区社区居委会",
    "area": {"district": "市南区", "street": "湛山街道", "community": "湛山社区", "grid_cell": "湛山社区第1网格"},
    "severity": "critical", "accept_by": "2026-11-21T00:31:00.000+00:00", "handle_by": "2026-11-22T00:01:00.000+00:00",
    "escalations": 1, "overdue": False, "opened_at": "2026-11-21T00:01:00.000+00:00",
    "updated_at": "2026-11-21T00:31:00.000+00:00", "seq": 2}


def _shown(case: dict[str, Any], now_ms: int, history: bool = False) -> dict[str, Any]:
    """A case as the API shows it: with `overdue` now; lists leave the history out."""
    return {**{k: v for k, v in case.items() if history or k != "history"}, "overdue": overdue(case, now_ms)}


@viewing.get("/cases", responses={200: {"content": {"application/json": {"example": {
                "cases": [_EXAMPLE], "next_cursor": None, "total": 1}}}}})
async def list_cases(
        parts: Parts, who: Viewer,
        status: Annotated[str | None, Query(description=f"comma-separated: {', '.join(STATUSES)}")] = None,
        level: Annotated[str | None, Query(description="comma-separated: where the cases sit now")] = None,
        area: Annotated[str | None, Query(max_length=200, description="a district, street, community or grid cell")] = None,
        overdue_: Annotated[bool | None, Query(alias="overdue", description="past its time to accept or handle")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """Cases, most recently updated first, `limit` per page; follow `next_cursor`."""
    statuses = choices("status", status, STATUSES)
    levels = choices("level", level, LEVELS)
    now = int(time.time() * 1000)

    def wanted(c: dict[str, Any]) -> bool:
        return (who.sees(c["area"]) and in_area(area, c["area"]) and (not statuses or c["status"] in statuses)
                and (not levels or c["level"] in levels) and (overdue_ is None or c["overdue"] == overdue_))

    shown = page([c for c in (_shown(c, now) for c in parts.cases.cases.values()) if wanted(c)], limit, cursor)
    return {"cases": shown.items, "total": shown.total, "next_cursor": shown.next_cursor}


@viewing.get("/cases/{case_id}", responses={404: {"description": "no such case"}})
async def get_case(parts: Parts, case_id: str, who: Viewer) -> dict[str, Any]:
    """One case with every transition of its history: who, when, at which level and unit."""
    case = parts.cases.cases.get(case_id)
    if case is None or not who.sees(case["area"]):
        raise HTTPException(404, f"no case {case_id!r}")
    return _shown(case, int(time.time() * 1000), history=True)


ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "accepted, not yet applied by the worker"}, 404: {"description": "no such case"},
    409: {"description": "not possible from the case's status"}, 422: {"description": "a note is needed"}}


def _route(kind: str, doc: str) -> None:
    async def act(request: Request, parts: Parts, case_id: str, who: Operator) -> Any:
        body = await read_model(request, Action, parts.settings.api_read_timeout_s)
        view = parts.cases
        case = view.cases.get(case_id)
        if case is None or not who.sees(case["area"]):
            raise HTTPException(404, f"no case {case_id!r}")
        allowed, _ = COMMANDS[kind]
        if case["status"] not in allowed:
            raise HTTPException(409, f"case {case_id} is {case['status']}; {kind} needs it {' or '.join(allowed)}")
        if kind in ("feedback", "return") and not body.note:
            raise HTTPException(422, f"{kind} needs a note: {'what was done' if kind == 'feedback' else 'why'}")
        doc = command(kind, case, who.identity, recorded_note(body, who), int(time.time() * 1000))
        await parts.producer.send(parts.settings.topics.case_inputs, [(case_id.encode(), orjson.dumps(doc))])
        done = await applied(lambda: view.cases[case_id]["seq"], case["seq"], view.changed)
        now = int(time.time() * 1000)
        return _shown(view.cases[case_id], now, history=True) if done else not_applied_yet("case", _shown(case, now))

    act.__doc__ = doc
    act.__name__ = f"{kind}_case"
    acting.post(f"/cases/{{case_id}}/{kind}", openapi_extra=body_schema(Action), responses=ACTION_RESPONSES)(act)


_route("accept", "The unit where the case sits takes it on. Body `{\"by\", \"note\"}`.")
_route("feedback", "Handled: what was done, in the note (required).")
_route("verify", "The supervising level checked the work.")
_route("close", "Closed: from accepted, handled or verified.")
_route("return", "Wrong unit: the case goes back one level up, with the reason in the note (required).")
