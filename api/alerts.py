"""The alerts read model: every alert's latest state from the compacted alerts topic, its
full history in a durable archive, and live feeds for WebSocket clients.

Positions. Each alert state arrives at a (partition, offset) of the alerts topic; a
client's position is the offset it has seen per partition, written `p:o,p:o…`. Every
replica reads the same topic, so a position from one replica means the same on another,
and "what changed since" is the alerts whose latest state lies beyond it (compaction
keeps every alert's latest state, so nothing a client missed can be compacted away).

Archive. The embedded broker keeps its topics in memory only; the archive (SQLite under
`--data-dir`) keeps every alert and every transition of its history, so restarting the
API, a worker or the broker loses none. The view is loaded from it first, then from the
topic; a state is applied only if its `seq` is newer than what is held.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Iterator, TypedDict

import orjson

from streams.alerting import Alert, Transition
from streams.rules import SEVERITIES

log = logging.getLogger(__name__)

Position = dict[int, int]


class OpenCounts(TypedDict):
    total: int
    by_severity: dict[str, int]  # every severity, zeros too
    by_domain: dict[str, int]  # the domains with open alerts


def format_position(position: Position) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(position.items()))


def parse_position(text: str) -> Position:
    """Raises ValueError for anything but `p:o[,p:o…]` with small non-negative numbers."""
    out: Position = {}
    for part in filter(None, text.split(",")):
        p, _, o = part.partition(":")
        if not (p.isdigit() and o.lstrip("-").isdigit()) or len(p) > 6 or len(o) > 19:
            raise ValueError(f"bad position {part!r}; expected partition:offset")
        out[int(p)] = int(o)
    return out


class Archive:
    """Alerts and their transitions in SQLite: idempotent writes, so replicas sharing a
    file and replays of the topic only ever add what is new."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, seq INTEGER, doc BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS history (alert TEXT, n INTEGER, entry BLOB, "
                        "PRIMARY KEY (alert, n))")

    def save(self, alert: Alert) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO alerts VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                            "SET seq = excluded.seq, doc = excluded.doc WHERE excluded.seq > alerts.seq",
                            (alert["id"], alert["seq"], orjson.dumps(alert)))
            self.db.executemany("INSERT OR IGNORE INTO history VALUES (?, ?, ?)",
                                [(alert["id"], h["n"], orjson.dumps(h)) for h in alert.get("history", ())])

    def alerts(self) -> Iterator[Alert]:
        for (doc,) in self.db.execute("SELECT doc FROM alerts"):
            yield orjson.loads(doc)

    def history(self, alert_id: str) -> list[Transition]:
        return [orjson.loads(e) for (e,) in self.db.execute(
            "SELECT entry FROM history WHERE alert = ? ORDER BY n", (alert_id,))]

    def close(self) -> None:
        self.db.close()


class Feed:
    """One live client's queue of (alert area, alert message); `overflowed` once it fell
    too far behind."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[tuple[dict[str, str], str]] = asyncio.Queue(size)
        self.overflowed = False


class AlertView:
    def __init__(self, archive: Archive, feed_size: int = 1000) -> None:
        self.archive = archive
        self.alerts: dict[str, Alert] = {a["id"]: a for a in archive.alerts()}
        self.at: dict[str, tuple[int, int]] = {}  # alert id → where its state is in the topic
        self.position: Position = {}
        self.feed_size = feed_size
        self._feeds: set[Feed] = set()
        self._changed = asyncio.Event()

    def apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        self.position[partition] = offset
        try:
            alert = orjson.loads(value) if value is not None else None
            if not isinstance(alert, dict) or not isinstance(alert.get("id"), str):
                return
        except orjson.JSONDecodeError:
            return
        held = self.alerts.get(alert["id"])
        self.at[alert["id"]] = (partition, offset)
        if held is not None and held.get("seq", 0) >= alert.get("seq", 0):
            return  # a replay, or the archive already had this state
        self.alerts[alert["id"]] = alert
        try:
            self.archive.save(alert)
        except sqlite3.Error as exc:  # the live view goes on; the archive catches up on the next change
            log.error("alert archive: %s", exc)
        message = orjson.dumps({"type": "alert", "position": format_position(self.position),
                                "alert": summary(alert)}).decode()
        for feed in list(self._feeds):
            try:
                feed.queue.put_nowait((alert["area"], message))  # the area: scoped tokens see theirs
            except asyncio.QueueFull:  # a client that doesn't read: it resumes from its position
                self._feeds.discard(feed)
                feed.overflowed = True
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        """Wait until any alert changes (or the timeout passes)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def since(self, position: Position) -> list[Alert]:
        """Alerts whose latest state lies beyond `position`, in topic order per partition."""
        beyond = [(at, aid) for aid, at in self.at.items() if at[1] > position.get(at[0], -1)]
        return [self.alerts[aid] for _, aid in sorted(beyond)]

    def subscribe(self) -> "Feed":
        feed = Feed(self.feed_size)
        self._feeds.add(feed)
        return feed

    def unsubscribe(self, feed: "Feed") -> None:
        self._feeds.discard(feed)

    def with_history(self, alert_id: str) -> Alert | None:
        alert = self.alerts.get(alert_id)
        if alert is None:
            return None
        history = self.archive.history(alert_id)
        return {**alert, "history": history if len(history) >= len(alert.get("history", ())) else alert["history"]}

    def open_counts(self) -> OpenCounts:
        """Open (firing or acknowledged) alerts: how many, by severity and by domain."""
        out = OpenCounts(total=0, by_severity=dict.fromkeys(SEVERITIES, 0), by_domain={})
        for a in self.alerts.values():
            if a["status"] != "resolved":
                out["total"] += 1
                out["by_severity"][a["severity"]] += 1
                out["by_domain"][a["domain"]] = out["by_domain"].get(a["domain"], 0) + 1
        return out


def summary(alert: Alert) -> Alert:
    """An alert without its history: what lists and live feeds carry."""
    return {k: v for k, v in alert.items() if k != "history"}  # type: ignore[return-value]
