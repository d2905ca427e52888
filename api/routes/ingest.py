"""Ingest over HTTP, for gateways that can't speak Kafka (contract §5).

Each valid event is produced to its domain's topic keyed by its entity id, exactly as a
Kafka-speaking gateway would, and the answer says which items were rejected and why.
Invalid items are answered, not dead-lettered: the caller is there to read the reason.
"""

from __future__ import annotations

import time

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from api.bodies import read_body
from api.deps import Parts, router
from api.query import known_domain
from streams import events as contract

ingesting = router("ingest", "ingest")

EXAMPLE = [{"type": "traffic.flow", "ts": "2026-11-21T08:00:00+08:00", "sensor_id": "T-0001",
            "interval_s": 60, "volume": 23, "speed_kmh": 42.5, "occupancy": 0.18}]


@ingesting.post(
    "/ingest/{domain}", status_code=202,
    # The body is read by hand, within the size limit, so it is described here rather than
    # declared as a parameter (FastAPI would read all of it first).
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [{"type": "array", "items": {"type": "object"}},
                             {"type": "object", "properties": {"events": {"type": "array"}}}]},
        "example": EXAMPLE}}}},
    responses={202: {"content": {"application/json": {"example": {
        "accepted": 1, "rejected": 1,
        "errors": [{"index": 1, "reason": "out of range: occupancy=1.4 not in [0, 1]"}]}}}},
        413: {"description": "body or batch too large"}, 503: {"description": "Kafka unreachable"}})
async def ingest(request: Request, parts: Parts, domain: str) -> JSONResponse:
    known_domain(domain)
    settings = parts.settings
    raw = await read_body(request, settings.max_body_bytes, settings.api_read_timeout_s)
    try:
        doc = contract.loads(raw)
    except contract.Invalid as exc:
        raise HTTPException(400, str(exc)) from None
    items = doc.get("events") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise HTTPException(422, 'body must be a JSON array of events or {"events": [...]}')
    if len(items) > settings.max_batch:
        raise HTTPException(413, f"{len(items)} events in one request; at most {settings.max_batch}")
    accepted, errors = [], []
    # A gateway whose clock runs ahead is told here, before its events reach a topic.
    now_ms, skew_ms = int(time.time() * 1000), int(settings.clock_skew_s * 1000)
    for i, item in enumerate(items):
        try:
            accepted.append(contract.validate(domain, item, now_ms, skew_ms))
        except contract.Invalid as exc:
            errors.append({"index": i, "reason": str(exc)})
    await parts.producer.send_events(domain, accepted)
    return JSONResponse({"accepted": len(accepted), "rejected": len(errors), "errors": errors},
                        status_code=202)
