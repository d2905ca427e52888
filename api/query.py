"""What several routes read from a request alike: instants, comma-separated choices, the
known domains and levels, and paged lists (alerts, incidents, cases), each answering a
bad value with a 4xx that says what would have been right."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import orjson
from fastapi import HTTPException

from streams.events import ENTITY_FIELD, Invalid, parse_ts
from streams.registry import LEVELS


def known_domain(domain: str) -> str:
    """`domain` when it is one of the city's; a 404 naming the ones there are if not."""
    if domain not in ENTITY_FIELD:
        raise HTTPException(404, f"unknown domain {domain!r}; one of {', '.join(ENTITY_FIELD)}")
    return domain


def known_level(level: str) -> str:
    """`level` when it is an area level; a 404 naming the levels if not."""
    if level not in LEVELS:
        raise HTTPException(404, f"unknown level {level!r}; one of {', '.join(LEVELS)}")
    return level


def instant(name: str, value: str | None) -> int | None:
    """Epoch ms of an RFC 3339 stamp or of epoch ms as digits; None for None; 422 else."""
    if value is None:
        return None
    try:
        return parse_ts(int(value) if value.lstrip("-").isdigit() else value)
    except Invalid as exc:
        raise HTTPException(422, f"{name}: {str(exc).removeprefix('bad timestamp: ')}") from None
    except ValueError:  # digits beyond what int() will convert
        raise HTTPException(422, f"{name}: not RFC 3339 or epoch milliseconds") from None


def choices(name: str, value: str | None, allowed: Sequence[str]) -> set[str] | None:
    """The comma-separated values of a filter, each one of `allowed`; None when not given."""
    if value is None:
        return None
    chosen = set(value.split(","))
    if not chosen <= set(allowed):
        raise HTTPException(422, f"{name}: each of {', '.join(sorted(chosen - set(allowed)))[:200]} "
                                 f"is not one of {', '.join(allowed)}")
    return chosen


def in_area(area: str | None, doc_area: Mapping[str, str]) -> bool:
    """Whether a document's area names `area` at any level (no `area`: every document)."""
    return area is None or area in (doc_area.get(level) for level in LEVELS)


@dataclass(frozen=True)
class Page:
    items: list[Any]  # the documents of this page
    total: int  # of the whole list, every page alike
    next_cursor: str | None  # None on the last page


def page(items: Sequence[Mapping[str, Any]], limit: int, cursor: str | None) -> Page:
    """Documents with `updated_at` and `id`, most recently updated first: the `limit`
    after `cursor` (a `next_cursor` this API handed out; 422 for anything else)."""
    after = _after(cursor) if cursor else None
    ordered = sorted(items, key=_order, reverse=True)
    rest = ordered if after is None else [d for d in ordered if _order(d) < after]
    shown = rest[:limit]
    more = len(rest) > limit
    return Page(shown, len(ordered), _cursor(shown[-1]) if more else None)


def _order(doc: Mapping[str, Any]) -> tuple[str, str]:
    return doc["updated_at"], doc["id"]


def _cursor(doc: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(_order(doc)))).decode()


def _after(cursor: str) -> tuple[str, str]:
    try:
        updated_at, doc_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(updated_at, str) and isinstance(doc_id, str):
            return updated_at, doc_id
    except (ValueError, TypeError, orjson.JSONDecodeError):
        pass
    raise HTTPException(422, "cursor: not one this API handed out")
