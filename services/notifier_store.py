"""The notifier's durable state, one SQLite file: open alerts, webhook groups, the queue.

Everything a notification is made from is here before the Kafka offset that brought it is
committed, and a notification leaves the queue only once its receiver took it, so neither
a restart nor a receiver that is down for hours loses one. Every method is one
transaction; the notifier calls them from one event loop, never across an `await`, so a
read and the write that follows it see the same state.
"""

from __future__ import annotations

import fcntl
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from services.alert_payloads import Labels, Member, Notice, group_key, group_labels, labels, telling
from services.config import ConfigError

# Resolved alerts are remembered this long after their last change, so a record read again
# after a crash (offsets are committed after each batch) is recognised by its seq.
RESOLVED_KEPT_S = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    rev INTEGER NOT NULL,            -- bumped by every change applied here
    seq INTEGER,                     -- the producer's; an older or equal one is a re-read
    status TEXT NOT NULL,
    doc BLOB NOT NULL,               -- as services.alert_payloads.parse_alert returns it
    changed REAL NOT NULL,
    grp TEXT,                        -- its webhook group until the group told its resolution
    told_status TEXT,                -- what webhook receivers were last told
    told_labels BLOB,
    am_rev INTEGER,                  -- the rev Alertmanager last got, with which labels, when
    am_labels BLOB,
    am_at REAL,
    am_open INTEGER,                 -- whether it was last sent to Alertmanager as open
    am_opened REAL                   -- when Alertmanager got it open after it wasn't
);
CREATE INDEX IF NOT EXISTS alerts_grp ON alerts (grp);
CREATE TABLE IF NOT EXISTS groups (
    key TEXT PRIMARY KEY,
    labels BLOB NOT NULL,
    opened REAL NOT NULL,
    flushed REAL,                    -- when it last notified; NULL until its first
    pending INTEGER NOT NULL         -- a member changed since the group was last looked at
);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: FIFO order per receiver
    url TEXT NOT NULL,
    key TEXT NOT NULL,               -- sent as Idempotency-Key, the same on every attempt
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_url ON queue (url, id);
CREATE TABLE IF NOT EXISTS members (  -- alerts told through their incident, not by themselves
    alert TEXT PRIMARY KEY,
    incident TEXT NOT NULL,
    noted REAL NOT NULL
);
"""
MEMBERS_KEPT_S = 7 * 86_400.0  # longer than any alert is held back or read again

# Columns added since the first schema, for files written by an older notifier.
_ADDED = {"am_open": "INTEGER", "am_opened": "REAL"}

# Alertmanager forgets an open alert whose endsAt passes, so open ones are re-sent. An
# alert Alertmanager never got is sent open even if it resolved meanwhile, and a
# resolution goes only once the alert has been open there for a resend: Alertmanager
# notifies an alert only if it is still firing when its group's wait ends (30 s by
# default), so a resolution sent sooner would make it an alert nobody was told of.
_AM_DUE = """(status != 'resolved' AND (am_rev IS NULL OR am_rev != rev OR am_at <= :stale))
              OR (status = 'resolved' AND (am_rev IS NULL OR (am_open AND am_opened <= :stale)))"""


@dataclass(frozen=True)
class Queued:
    id: int
    url: str
    key: str
    body: bytes
    attempts: int
    next_at: float


@dataclass(frozen=True)
class Unpushed:
    """An alert whose state Alertmanager hasn't got, or got longer ago than a resend."""

    rev: int
    alert: Notice
    pushed_labels: Labels | None
    open: bool  # to be sent open: it is, or it resolved before Alertmanager got it open


class NotifierStore:
    def __init__(self, path: Path, queue_max: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two notifiers on one file would both deliver its queue: every notification twice.
        self._lock = open(path.with_name(path.name + ".lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(f"data_dir (CITYBRAIN_DATA_DIR): {path} is in use by another notifier; "
                              "run one notifier per data dir") from None
        self.queue_max = queue_max
        self.db = sqlite3.connect(path)
        # FULL: a committed transaction survives a power cut, not only a crash, because
        # the Kafka offsets committed after it say it's done.
        self.db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;" + _SCHEMA)
        have = {row[1] for row in self.db.execute("PRAGMA table_info(alerts)")}
        if _ADDED.keys() - have:
            with self.db:
                for name, kind in _ADDED.items():
                    self.db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {kind}")
                # An older notifier sent a resolution as soon as it read it.
                self.db.execute("UPDATE alerts SET am_open = (am_rev IS NOT NULL AND status != 'resolved'), "
                                "am_opened = am_at")

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    # ------------------------------------------------------------ alerts in

    def note_members(self, incident: str, alerts: list[str], now: float) -> None:
        """These alerts are told through `incident` from now on, unless they were told
        already (their incident came late): then their own resolution is told too."""
        with self.db:
            self.db.executemany("INSERT INTO members (alert, incident, noted) VALUES (?, ?, ?) "
                                "ON CONFLICT (alert) DO NOTHING", [(a, incident, now) for a in alerts])
            self.db.execute("DELETE FROM members WHERE noted <= ?", (now - MEMBERS_KEPT_S,))

    def apply(self, alerts: list[Notice], now: float, grouped: bool) -> int:
        """Record the alerts' latest states; returns how many changed anything."""
        applied = 0
        with self.db:
            for a in alerts:
                row = self.db.execute("SELECT seq FROM alerts WHERE id = ?", (a["id"],)).fetchone()
                if row is None and a["status"] == "resolved":
                    continue  # nobody was told it fired, so there is no resolution to tell
                if row is None and self.db.execute("SELECT 1 FROM members WHERE alert = ?", (a["id"],)).fetchone():
                    continue  # its incident tells of it
                if row is not None and row[0] is not None and a["seq"] is not None and a["seq"] <= row[0]:
                    continue
                key = group_key(group_labels(a)) if grouped else None
                self.db.execute(
                    "INSERT INTO alerts (id, rev, seq, status, doc, changed, grp) VALUES (?, 1, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET rev = rev + 1, seq = excluded.seq, status = excluded.status, "
                    "doc = excluded.doc, changed = excluded.changed, grp = excluded.grp",
                    (a["id"], a["seq"], a["status"], orjson.dumps(a), now, key))
                if key is not None:
                    self.db.execute(
                        "INSERT INTO groups (key, labels, opened, pending) VALUES (?, ?, ?, 1) "
                        "ON CONFLICT (key) DO UPDATE SET pending = 1",
                        (key, orjson.dumps(group_labels(a)), now))
                applied += 1
            self.db.execute(
                "DELETE FROM alerts WHERE status = 'resolved' AND (grp IS NULL OR NOT ?) "
                "AND NOT COALESCE(am_open, 0) AND changed <= ?", (grouped, now - RESOLVED_KEPT_S))
        return applied

    # ------------------------------------------------------------ webhook groups

    def due_groups(self, now: float, wait_s: float, interval_s: float) -> list[str]:
        """Groups with a change whose group wait (first notification) or group interval
        (since the last one) has passed."""
        rows = self.db.execute(
            "SELECT key FROM groups WHERE pending AND "
            "(flushed IS NULL AND opened <= ? OR flushed <= ?) ORDER BY opened",
            (now - wait_s, now - interval_s)).fetchall()
        return [r[0] for r in rows]

    def group(self, key: str) -> tuple[Labels, list[Member]]:
        (group,) = self.db.execute("SELECT labels FROM groups WHERE key = ?", (key,)).fetchone()
        rows = self.db.execute(
            "SELECT doc, told_status, told_labels FROM alerts WHERE grp = ? ORDER BY id", (key,)).fetchall()
        return orjson.loads(group), [
            Member(orjson.loads(doc), status, orjson.loads(told) if told else None) for doc, status, told in rows]

    def flushed(self, key: str, members: list[Member], bodies: list[tuple[str, bytes]], now: float) -> list[str]:
        """The group was looked at: queue its notification (one body per receiver URL, or
        none when nothing was to tell), remember what its members were told, and let go of
        the resolved ones. Returns the URLs of notifications dropped to keep the bound."""
        with self.db:
            for url, body in bodies:
                self.db.execute("INSERT INTO queue (url, key, body, next_at) VALUES (?, ?, ?, ?)",
                                (url, uuid.uuid4().hex, body, now))
            told = [(telling(m), m) for m in members]
            self.db.executemany(
                "UPDATE alerts SET told_status = ?, told_labels = ?, "
                "grp = CASE WHEN ? = 'resolved' THEN NULL ELSE grp END WHERE id = ?",
                [(status, orjson.dumps(labels(m.alert)), status, m.alert["id"]) for status, m in told])
            # A resolution not told yet keeps the group due, at its next interval.
            untold = any(status != m.alert["status"] for status, m in told)
            self.db.execute("UPDATE groups SET pending = ?, flushed = CASE WHEN ? THEN ? ELSE flushed END "
                            "WHERE key = ?", (untold, bool(bodies), now, key))
            self.db.execute("DELETE FROM groups WHERE key = ? AND NOT EXISTS "
                            "(SELECT 1 FROM alerts WHERE grp = ?)", (key, key))
            return self._bound()

    # ------------------------------------------------------------ the queue

    def _bound(self) -> list[str]:
        (n,) = self.db.execute("SELECT COUNT(*) FROM queue").fetchone()
        if n <= self.queue_max:
            return []
        rows = self.db.execute("DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?) "
                               "RETURNING url", (n - self.queue_max,)).fetchall()
        return [r[0] for r in rows]

    def head(self, url: str) -> Queued | None:
        """The oldest notification for `url`: each receiver gets its notifications in order."""
        row = self.db.execute("SELECT id, url, key, body, attempts, next_at FROM queue WHERE url = ? "
                              "ORDER BY id LIMIT 1", (url,)).fetchone()
        return Queued(*row) if row else None

    def done(self, item: Queued) -> None:
        with self.db:
            self.db.execute("DELETE FROM queue WHERE id = ?", (item.id,))

    def retry(self, item: Queued, next_at: float) -> None:
        with self.db:
            self.db.execute("UPDATE queue SET attempts = attempts + 1, next_at = ? WHERE id = ?",
                            (next_at, item.id))

    def forget_receivers(self, keep: list[str]) -> list[str]:
        """Drop what is queued for URLs no longer configured; returns their URLs."""
        with self.db:
            rows = self.db.execute(f"DELETE FROM queue WHERE url NOT IN ({','.join('?' * len(keep))}) "
                                   "RETURNING url", keep).fetchall()
        return [r[0] for r in rows]

    def queued(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT url, COUNT(*) FROM queue GROUP BY url").fetchall())

    # ------------------------------------------------------------ Alertmanager

    def unpushed(self, now: float, resend_s: float, limit: int) -> list[Unpushed]:
        rows = self.db.execute(
            "SELECT rev, doc, am_labels, status != 'resolved' OR am_rev IS NULL FROM alerts "
            f"WHERE {_AM_DUE} ORDER BY changed LIMIT :limit", {"stale": now - resend_s, "limit": limit}).fetchall()
        return [Unpushed(rev, orjson.loads(doc), orjson.loads(ls) if ls else None, bool(open_))
                for rev, doc, ls, open_ in rows]

    def count_unpushed(self, now: float, resend_s: float) -> int:
        (n,) = self.db.execute(f"SELECT COUNT(*) FROM alerts WHERE {_AM_DUE}", {"stale": now - resend_s}).fetchone()
        return n

    def pushed(self, items: list[Unpushed], now: float) -> None:
        """Alertmanager took these; a change applied meanwhile has a later rev, so it stays due."""
        with self.db:
            self.db.executemany(
                "UPDATE alerts SET am_rev = :rev, am_labels = :labels, am_at = :now, am_open = :open, "
                "am_opened = CASE WHEN :open AND NOT COALESCE(am_open, 0) THEN :now ELSE am_opened END "
                "WHERE id = :id",
                [{"rev": u.rev, "labels": orjson.dumps(labels(u.alert)), "now": now, "open": u.open,
                  "id": u.alert["id"]} for u in items])
