"""What every answer carries and what every request must name: security headers, and
(when configured) the host names the API is reached by.

Both are plain ASGI middleware, so they cover every response the app sends: routes,
static files, errors, and the 405 the metrics middleware gives unknown methods.
"""

from __future__ import annotations

import base64
import hashlib
import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The dashboard loads nothing but its own files and talks only to its own origin (its
# live feed too: 'self' covers ws:// and wss:// of the same host); no page may frame it,
# so its ack and resolve buttons can't be clicked through another site.
CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
# Swagger UI and ReDoc, from files shipped with the service (api.docs): each starts with an
# inline script (allowed by its hash, see with_inline_scripts), styles itself inline and
# draws icons from data: URIs; ReDoc searches in a blob: worker. Still nothing off-site.
DOCS_CSP = ("default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY")]  # frame-ancestors for browsers without CSP 2

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def inline_script_csp(html: str) -> str:
    """DOCS_CSP allowing exactly the inline scripts of `html`, and no other."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in _SCRIPT.findall(html))
    return DOCS_CSP.format(hashes=hashes)


class SecurityHeaders:
    """Adds HEADERS and a CSP (CSP unless the route set its own) to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers + HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedHosts:
    """Refuses a request whose Host header names none of `hosts` (400, or a WebSocket
    closed with 1008), so a DNS-rebinding page can't talk to an API on a private network.
    A `*.` entry allows the domain's subdomains."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.exact = {h.lower() for h in hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    def allows(self, host: str) -> bool:
        name = host.lower()
        if not name.endswith("]"):  # not a bare IPv6 address: drop the port, if any
            name = name.rpartition(":")[0] or name
        return name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if self.allows(host):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "host not served here"})
        else:
            body = orjson.dumps({"detail": "this API is not served under that host name"})
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
