"""API tokens: `token=role` pairs from `CITYBRAIN_API_TOKENS` or a token file.

When no tokens are configured, `citybrain up` generates one per role with 256 bits of
entropy and writes them to a file only its owner can read, then prints the file's path
(never the tokens) so they stay out of terminal scrollback and logs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from services.config import ConfigError, Settings

ROLES = ("viewer", "operator", "admin", "ingest")


def parse(spec: str, source: str = "CITYBRAIN_API_TOKENS") -> dict[str, str]:
    tokens: dict[str, str] = {}
    lines = (line for line in spec.splitlines() if not line.lstrip().startswith("#"))
    for part in ",".join(lines).split(","):
        part = part.strip()
        if not part:
            continue
        token, sep, role = part.rpartition("=")
        if not sep or not token or role not in ROLES:
            raise ConfigError(f"{source}: entries must be token=role with role one of "
                              f"{', '.join(ROLES)}")
        tokens[token] = role
    return tokens


def generate(path: Path) -> dict[str, str]:
    tokens = {secrets.token_urlsafe(32): role for role in ROLES}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # open() keeps the mode of a file that was already there: narrow it before writing.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# citybrain API tokens, one token=role per line (Authorization: Bearer <token>)\n")
        f.writelines(f"{t}={r}\n" for t, r in tokens.items())
    return tokens


def configured(settings: Settings) -> dict[str, str]:
    """The tokens the API accepts; an empty dict when none are configured."""
    if settings.api_tokens:
        return parse(settings.api_tokens)
    if settings.token_file is not None:
        try:
            return parse(settings.token_file.read_text(), str(settings.token_file))
        except OSError as exc:
            raise ConfigError(f"token_file (CITYBRAIN_TOKEN_FILE): {exc.strerror}: {settings.token_file}") from None
    return {}
