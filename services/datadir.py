"""The data directory holds officers' names and notes (the alert archive), logs and the
API tokens: only the service's own user may read any of it.

Every citybrain process runs with umask 077, so whatever it (or a child it starts, the
embedded broker included) creates is 0600 or 0700 from the first byte; and at start it
narrows what an earlier version, or a person, left readable by others.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077


def private_from_now() -> None:
    os.umask(UMASK)


def narrow(data_dir: Path) -> None:
    """`data_dir` 0700 and everything in it owner-only (directories 0700, files 0600),
    if it exists; symbolic links are left alone, and so is what they point to."""
    if not data_dir.is_dir():
        return
    data_dir.chmod(0o700)
    for root, dirs, files in os.walk(data_dir):
        for names, mode in ((dirs, 0o700), (files, 0o600)):
            for name in names:
                path = os.path.join(root, name)
                try:
                    if not os.path.islink(path) and stat.S_IMODE(os.lstat(path).st_mode) != mode:
                        os.chmod(path, mode)
                except FileNotFoundError:  # gone meanwhile (a broker segment, a WAL)
                    pass
