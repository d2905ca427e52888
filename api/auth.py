"""Bearer-token auth with roles: admin ⊇ operator ⊇ viewer; ingest stands apart.

A token belongs to a principal: its role, and optionally the name of the person or post
it was issued to (recorded on every action taken with it) and an area it is limited to
(contract §5: `token=role[:name][@level:area]`). The routes check tokens through the
dependencies in api/deps.py.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import Mapping

GRANTS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"viewer"}),
    "operator": frozenset({"viewer", "operator"}),
    "admin": frozenset({"viewer", "operator", "admin"}),
    "ingest": frozenset({"ingest"}),
}


@dataclass(frozen=True)
class Principal:
    role: str
    name: str | None = None
    # (level, area) the token is limited to: it sees and acts on the alerts, incidents and
    # cases of that area and below only (contract §8).
    scope: tuple[str, str] | None = None
    number: int = 0  # its place in the configured list, 1-based: names an unnamed token

    def may(self, role: str) -> bool:
        """Whether the token's role grants `role`."""
        return role in GRANTS[self.role]

    def sees(self, area: Mapping[str, str] | None) -> bool:
        """Whether something in `area` (its names at each level) is within the token's scope."""
        return self.scope is None or (area or {}).get(self.scope[0]) == self.scope[1]

    @property
    def identity(self) -> str:
        """Who acted, as recorded: the token's name, or else its role and place in the
        list, which every replica shares and which says nothing about the token itself."""
        return self.name or f"{self.role} token #{self.number}"


class TokenBook:
    def __init__(self, tokens: Mapping[str, Principal | str]) -> None:
        self._tokens = [(t.encode(), replace(Principal(p) if isinstance(p, str) else p, number=n))
                        for n, (t, p) in enumerate(tokens.items(), 1)]

    def principal_of(self, token: str) -> Principal | None:
        """Compares against every token, always, so timing tells nothing about which
        tokens exist or how much of one matched."""
        presented = token.encode()
        found = None
        for known, principal in self._tokens:
            if hmac.compare_digest(presented, known):
                found = principal
        return found


class Waiting:
    """Live clients connected but not yet authenticated, at most `limit` at a time: each
    may hold the connection for a while and costs a token check (api/routes/live.py)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1
