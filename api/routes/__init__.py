"""The HTTP routes, a module per resource; what several of them check alike is here."""

from __future__ import annotations

from fastapi import HTTPException

from streams.events import ENTITY_FIELD


def known_domain(domain: str) -> str:
    """`domain` when it is one of the city's; a 404 naming the ones there are if not."""
    if domain not in ENTITY_FIELD:
        raise HTTPException(404, f"unknown domain {domain!r}; one of {', '.join(ENTITY_FIELD)}")
    return domain
