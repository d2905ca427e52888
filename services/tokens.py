"""API tokens: `token=role[:name][@level:area]` entries from `CITYBRAIN_API_TOKENS` or a
token file (contract §5), comma- or line-separated.

`name` is the person or post the token was issued to, recorded on every action taken
with it; `@level:area` limits the token to one area (kept on the principal; the routes
do not filter by it yet). When no tokens are configured, `citybrain up` generates one per
role with 256 bits of entropy and writes them to a file only its owner can read, then
prints the file's path (never the tokens) so they stay out of terminal scrollback and logs.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from api.auth import Principal
from api.text import plain
from services.config import ConfigError, Settings
from streams.registry import LEVELS

ROLES = ("viewer", "operator", "admin", "ingest")
# The token is everything before the last `=role` (a token may hold `=`, as padded
# base64 does); a name can't hold `@`, `,` or a line break, which end it.
_ENTRY = re.compile(rf"^(?P<token>.+)=(?P<role>{'|'.join(ROLES)})(?::(?P<name>[^@]*))?"
                    rf"(?:@(?P<level>[a-z_]+):(?P<area>.+))?$")


def parse(spec: str, source: str = "CITYBRAIN_API_TOKENS") -> dict[str, Principal]:
    tokens: dict[str, Principal] = {}
    lines = (line for line in spec.splitlines() if not line.lstrip().startswith("#"))
    for n, part in enumerate(",".join(lines).split(","), 1):
        part = part.strip()
        if not part:
            continue
        m = _ENTRY.match(part)
        if m is None:
            raise ConfigError(f"{source}: entry {n}: expected token=role[:name][@level:area] with "
                              f"role one of {', '.join(ROLES)}")
        try:
            name = plain(m["name"], "the name") if m["name"] is not None else None
            area = plain(m["area"], "the area") if m["area"] is not None else None
        except ValueError as exc:
            raise ConfigError(f"{source}: entry {n}: {exc}") from None
        if m["level"] is not None and m["level"] not in LEVELS:
            raise ConfigError(f"{source}: entry {n}: area level {m['level']!r} is not one of "
                              f"{', '.join(LEVELS)}")
        tokens[m["token"]] = Principal(m["role"], name, (m["level"], area) if area else None)
    return tokens


def generate(path: Path) -> dict[str, Principal]:
    tokens = {secrets.token_urlsafe(32): Principal(role) for role in ROLES}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # open() keeps the mode of a file that was already there: narrow it before writing.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# citybrain API tokens, one token=role[:name][@level:area] per line "
                "(Authorization: Bearer <token>)\n")
        f.writelines(f"{t}={p.role}\n" for t, p in tokens.items())
    return tokens


def configured(settings: Settings) -> dict[str, Principal]:
    """The tokens the API accepts; an empty dict when none are configured."""
    if settings.api_tokens:
        return parse(settings.api_tokens)
    if settings.token_file is not None:
        try:
            return parse(settings.token_file.read_text(), str(settings.token_file))
        except OSError as exc:
            raise ConfigError(f"token_file (CITYBRAIN_TOKEN_FILE): {exc.strerror}: {settings.token_file}") from None
    return {}
