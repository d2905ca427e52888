"""Bearer-token auth with roles: admin ⊇ operator ⊇ viewer; ingest stands apart.

A token belongs to a principal: its role, and optionally the name of the person or post
it was issued to (recorded on every action taken with it) and an area it is limited to
(contract §5: `token=role[:name][@level:area]`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

GRANTS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"viewer"}),
    "operator": frozenset({"viewer", "operator"}),
    "admin": frozenset({"viewer", "operator", "admin"}),
    "ingest": frozenset({"ingest"}),
}

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Principal:
    role: str
    name: str | None = None
    # (level, area) the token is limited to: it sees and acts on the alerts, incidents and
    # cases of that area and below only (contract §8).
    scope: tuple[str, str] | None = None
    number: int = 0  # its place in the configured list, 1-based: names an unnamed token

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


def require(role: str) -> Callable[..., Principal]:
    def check(request: Request,
              creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        who = request.app.state.tokens.principal_of(creds.credentials)
        if who is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if role not in GRANTS[who.role]:
            raise HTTPException(403, f"this token's role ({who.role}) may not do this; needs {role}")
        return who

    return check
