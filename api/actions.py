"""A person's action on an alert or a case: the body it comes with, the note as recorded,
and the wait until the worker has applied it.

An action goes through Kafka to the partition that owns its alert or case, like the
detections do, so the API answers only once its read model shows the change: with the
new state, or with 202 when the worker has not applied it within APPLIED_WAIT_S.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from api.auth import Principal
from api.text import plain

APPLIED_WAIT_S = 5.0  # how long an action waits to see its change in the read model


class Action(BaseModel):
    by: str = Field(min_length=1, max_length=100, description=(
        "who acts, as typed: a name or staff id. Recorded in the note; the action itself is "
        "recorded as the token's (its name, contract §5)"))
    note: str | None = Field(None, max_length=2000)

    @field_validator("by")
    @classmethod
    def plain_name(cls, v: str) -> str:
        return plain(v, "by")  # also refuses a lone surrogate (valid JSON, not text)

    @field_validator("note")
    @classmethod
    def plain_note(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else plain(v, "note", allow="\n\t")

    model_config = {"json_schema_extra": {"examples": [{"by": "值班员 王伟", "note": "抢修队已派出"}]}}


def recorded_note(body: Action, who: Principal) -> str | None:
    """The note as recorded: prefixed by the name typed, unless that is the token's own
    (a post's token is shared by the people on duty; the typed name says which one)."""
    if body.by == who.name:
        return body.note
    return f"{body.by}: {body.note}" if body.note else body.by


async def applied(seq_now: Callable[[], int], seq: int, changed: Callable[[float], Awaitable[None]]) -> bool:
    """Whether the document an action was sent for, at `seq` then, moved on within
    APPLIED_WAIT_S; `changed(timeout)` returns when its read model changes."""
    deadline = time.monotonic() + APPLIED_WAIT_S
    while seq_now() == seq and time.monotonic() < deadline:
        await changed(deadline - time.monotonic())
    return seq_now() != seq


def not_applied_yet(name: str, doc: Any) -> JSONResponse:
    """The 202 of an action the worker has not applied yet, with the document as it was."""
    return JSONResponse({"detail": "accepted; not applied yet", name: doc}, status_code=202)
