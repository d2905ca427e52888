"""Request bodies read by hand, after auth and within a size limit.

FastAPI reads a declared body parameter in full before any dependency runs, the token
check included; routes that take a body read it here instead, so a caller without a
token, or with too much to say, costs the server next to nothing.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int, wait_s: float) -> bytes:
    """The body, at most `limit` bytes (413 beyond), each part of it arriving within
    `wait_s`, the API's read timeout (408 otherwise: a client that trickles its body holds
    nothing long)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    body = bytearray()
    chunks = aiter(request.stream())
    while True:
        try:
            async with asyncio.timeout(wait_s):
                chunk = await anext(chunks, None)
        except TimeoutError:
            raise HTTPException(408, f"request body not received within {wait_s:g} s") from None
        if chunk is None:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body over {limit} bytes")


async def read_model(request: Request, model: type[M], wait_s: float, limit: int = 64 * 1024) -> M:
    """The body as `model`; a body that isn't one is a 422 like a declared parameter's."""
    try:
        return model.model_validate_json(await read_body(request, limit, wait_s))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def body_schema(model: type[BaseModel]) -> dict:
    """`openapi_extra` describing a body read by hand, so clients and fuzzers still see it."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema()}}}}
