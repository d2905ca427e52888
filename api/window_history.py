"""Closed windows on disk: the history half of the windows read model.

A closed window never changes again, and a city has many of them: an hour of one-minute
windows for 20k devices and their areas is millions of aggregates, which held as Python
dicts grew the API by 0.6 MB/s until the history was full (the 30-minute soak at 300
events/s of 2026-11-21, commit 2e6cd23, which kept six hours then). Here they go to SQLite
under `--data-dir` (one transaction per fetch of the topic), and memory keeps only the
open windows. Writes are idempotent (a replay of the topic, or replicas sharing the
file, rewrite the same rows), and the history outlives a restart of the API or of the
memory-only embedded broker. The table is `windows2`: since the worker's state layout 2 an
aggregate holds sums, not means, so rows of an older version are left unread.

A row's document is the window as JSON, its aggregate in the short form it had before
aggregates had names (`_row`, `_window`: this module is the one that knows it):
    {"window_end", "closed",
     "agg": {"n": events, "f": {field: [count, sum, m2, min, max]},
             "c": {counter: int}, "p": {product: float}, "s": [ts, value] | null}}
Kept, so that the rows of earlier versions read as they are and replicas of two versions
sharing a file during an upgrade write one format.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import orjson

from streams.windows import Agg, FieldStats, Latest

PRUNE_EVERY_S = 60.0


class WindowHistory:
    """Rows of (series, window start, partition share) → window document. A series is an
    entity's or an area's windows."""

    def __init__(self, path: Path, retention_ms: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_ms = retention_ms
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS windows2 (series TEXT, ws INTEGER, share INTEGER, doc BLOB, "
                        "PRIMARY KEY (series, ws, share)) WITHOUT ROWID")
        self.pending: list[tuple[str, int, int, bytes]] = []
        self.newest = self.db.execute("SELECT max(ws) FROM windows2").fetchone()[0] or 0
        self._pruned_at = 0.0

    def add(self, series: str, ws: int, share: int, window: dict[str, Any]) -> None:
        """A closed window: {"window_end", "closed", "agg": Agg}."""
        self.pending.append((series, ws, share, _row(window)))
        self.newest = max(self.newest, ws)

    def flush(self) -> None:
        """Write what was added since the last flush, in one transaction; now and then
        drop the windows older than the retention (by the newest window start seen)."""
        if self.pending:
            rows, self.pending = self.pending, []
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT OR REPLACE INTO windows2 VALUES (?, ?, ?, ?)", rows)
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            with self.db:
                self.db.execute("BEGIN")
                self.db.execute("DELETE FROM windows2 WHERE ws < ?", (self.horizon(),))

    def horizon(self) -> int:
        """The oldest window start kept: the retention ends with the newest window."""
        return self.newest + 1 - self.retention_ms

    def windows(self, series: str, since: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(window start, share, window) of a series from `since`, in start order."""
        for ws, share, doc in self.db.execute(
                "SELECT ws, share, doc FROM windows2 WHERE series = ? AND ws >= ? ORDER BY ws, share",
                (series, max(since, self.horizon()))):
            yield ws, share, _window(doc)

    def newest_in(self, series: str) -> int | None:
        """The start of a series' newest closed window."""
        return self.db.execute("SELECT max(ws) FROM windows2 WHERE series = ? AND ws >= ?",
                               (series, self.horizon())).fetchone()[0]

    def close(self) -> None:
        self.db.close()


def _row(window: dict[str, Any]) -> bytes:
    agg: Agg = window["agg"]
    return orjson.dumps({"window_end": window["window_end"], "closed": window["closed"], "agg": {
        "n": agg.events, "f": {name: list(stats) for name, stats in agg.fields.items()},
        "c": agg.counters, "p": agg.products, "s": None if agg.latest is None else list(agg.latest)}})


def _window(row: bytes) -> dict[str, Any]:
    doc = orjson.loads(row)
    agg = doc["agg"]
    doc["agg"] = Agg(agg["n"], {name: FieldStats(*stats) for name, stats in agg["f"].items()}, agg["c"], agg["p"],
                     None if agg["s"] is None else Latest(*agg["s"]))
    return doc
