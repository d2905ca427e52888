"""Bearer-token auth with roles: admin ⊇ operator ⊇ viewer; ingest stands apart."""

from __future__ import annotations

import hmac
from typing import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

GRANTS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"viewer"}),
    "operator": frozenset({"viewer", "operator"}),
    "admin": frozenset({"viewer", "operator", "admin"}),
    "ingest": frozenset({"ingest"}),
}

_bearer = HTTPBearer(auto_error=False)


class TokenBook:
    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(t.encode(), role) for t, role in tokens.items()]

    def role_of(self, token: str) -> str | None:
        """Compares against every token, always, so timing tells nothing about which
        tokens exist or how much of one matched."""
        presented = token.encode()
        found = None
        for known, role in self._tokens:
            if hmac.compare_digest(presented, known):
                found = role
        return found


def require(role: str) -> Callable[..., str]:
    def check(request: Request,
              creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        have = request.app.state.tokens.role_of(creds.credentials)
        if have is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if role not in GRANTS[have]:
            raise HTTPException(403, f"this token's role ({have}) may not do this; needs {role}")
        return have

    return check
