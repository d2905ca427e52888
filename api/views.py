"""Read models: what the API serves, built only from Kafka topics.

Because every view is rebuilt from compacted topics by each API process on its own, any
number of replicas serve the same answers, and a restarted API loses nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import orjson

from api.alerts import AlertView, Archive
from api.outlook import Outlooks
from api.window_history import WindowHistory
from api.settings import ApiSettings
from streams.registry import Registry
from streams.topics import DOMAINS, FETCH_MAX_WAIT_MS
from streams.topicview import TopicView
from streams.windows import SHAPES, Agg, area_rows, entity_rows, merge_all, recent


class Latency(NamedTuple):
    """Processing latency of a domain, added over its partitions."""

    counts: list[int]  # per bucket of streams.topics.LATENCY_BUCKETS, then +Inf
    total_s: float


class Vitals:
    """Progress of every (domain, partition), as the workers publish it, with a short
    history so rates come from the data itself: replicas that have read the same topic
    report the same rates, and the first request after a start already has one."""

    def __init__(self, span_ms: int = 10_000) -> None:
        self.span_ms = span_ms
        self.history: dict[str, deque[dict[str, Any]]] = {}

    @property
    def partitions(self) -> dict[str, dict[str, Any]]:
        return {key: docs[-1] for key, docs in self.history.items()}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        try:
            doc = orjson.loads(value)
            self.history.setdefault(key.decode(), deque(maxlen=256)).append(doc)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            pass

    def totals(self) -> dict[str, dict[str, Any]]:
        out = {d: {"events": 0, "rejected": 0, "late": 0, "future": 0, "records": 0, "closes": 0, "lag": 0,
                   "partitions": 0, "latest_event_ts": None} for d in DOMAINS}
        for doc in self.partitions.values():
            t = out.get(doc.get("domain"))
            if t is None:
                continue
            for k in ("events", "rejected", "late", "future", "records", "closes", "lag"):
                t[k] += int(doc.get(k) or 0)
            t["partitions"] += 1
            if doc.get("max_ts") is not None:
                t["latest_event_ts"] = max(t["latest_event_ts"] or 0, doc["max_ts"])
        return out

    def latency(self) -> dict[str, Latency]:
        """Per domain: processing-latency bucket counts and sum, added over partitions."""
        out: dict[str, Latency] = {}
        for doc in self.partitions.values():
            lat = doc.get("latency")
            if not lat or doc.get("domain") not in DOMAINS:
                continue
            counts, total = out.get(doc["domain"], Latency([0] * len(lat["counts"]), 0.0))
            out[doc["domain"]] = Latency([a + b for a, b in zip(counts, lat["counts"])], total + lat["sum"])
        return out

    def rates(self) -> dict[str, float]:
        """Events per second per domain over the last `span_ms` of the workers' own clock
        (the newest progress report), from each partition's reports."""
        docs = [d for h in self.history.values() for d in h]
        if not docs:
            return {d: 0.0 for d in DOMAINS}
        now = max(d["updated_at"] for d in docs)
        since = now - self.span_ms
        rates = dict.fromkeys(DOMAINS, 0.0)
        for history in self.history.values():
            latest = history[-1]
            base = next((d for d in reversed(history) if d["updated_at"] <= since), history[0])
            elapsed = latest["updated_at"] - base["updated_at"]
            if latest.get("domain") in rates and elapsed > 0:
                rates[latest["domain"]] += (latest["events"] - base["events"]) * 1000 / elapsed
        return {d: round(r, 1) for d, r in rates.items()}


class Windows:
    """Window figures per entity and per area, each summed over the partitions' shares,
    from the aggregates and rollups topics: open windows in memory, closed ones in a
    `WindowHistory` on disk, as far back as its retention. (An entity has one share as
    long as its producer keeps it on one partition, as every Kafka partitioner does.)"""

    def __init__(self, history: WindowHistory) -> None:
        self.history = history
        # series → window start → share (the partition) → window
        self.open: dict[str, dict[int, dict[int, dict[str, Any]]]] = {}

    def apply_aggregate(self, key: bytes | None, value: bytes | None) -> None:
        """A record of one partition's window: figures of some of its entities."""
        doc = _json(value)
        if doc is not None:
            for entity, agg in entity_rows(doc):
                self._apply(entity_series(doc["domain"], entity), doc["partition"], doc, agg)

    def apply_rollup(self, key: bytes | None, value: bytes | None) -> None:
        """A record of one partition's window: its shares of some areas, per level."""
        doc = _json(value)
        if doc is not None:
            for level, area, agg in area_rows(doc):
                self._apply(area_series(doc["domain"], level, area), doc["partition"], doc, agg)

    def _apply(self, series: str, share: int, doc: dict[str, Any], agg: Agg) -> None:
        ws = doc["window_start"]
        window = {"window_end": doc["window_end"], "closed": doc["closed"], "agg": agg}
        windows = self.open.setdefault(series, {})
        if window["closed"]:
            self.history.add(series, ws, share, window)
            shares = windows.get(ws, {})
            shares.pop(share, None)
            if not shares:
                windows.pop(ws, None)
        else:
            windows.setdefault(ws, {})[share] = window
        horizon = self.history.horizon()
        for old in [w for w in windows if w < horizon]:
            del windows[old]
        if not windows:
            del self.open[series]

    def flush(self) -> None:
        """After each fetch of a topic: closed windows to disk."""
        self.history.flush()

    def _shares(self, series: str, since: int) -> dict[int, dict[int, dict[str, Any]]]:
        shares: dict[int, dict[int, dict[str, Any]]] = {}
        for ws, share, w in self.history.windows(series, since):
            shares.setdefault(ws, {})[share] = w
        for ws, open_shares in self.open.get(series, {}).items():
            if ws >= since:
                shares.setdefault(ws, {}).update(open_shares)
        return shares

    def entity(self, domain: str, entity: str) -> dict[int, dict[str, Any]]:
        """Per window start: the entity's window, open or closed."""
        return self._merged(domain, entity_series(domain, entity), 0)

    def area(self, domain: str, level: str, area: str, since: int = 0) -> dict[int, dict[str, Any]]:
        """Per window start from `since`: the area's aggregate."""
        return self._merged(domain, area_series(domain, level, area), since)

    def _merged(self, domain: str, series: str, since: int) -> dict[int, dict[str, Any]]:
        """Per window start from `since`: the partitions' shares merged."""
        shares = self._shares(series, since)
        shape = SHAPES[domain]
        return {ws: {"window_start": ws, "window_end": next(iter(by.values()))["window_end"],
                     "closed": all(d["closed"] for d in by.values()),
                     # Sorted, so every replica adds floats in the same order and agrees
                     # to the last bit.
                     "agg": merge_all(shape, (by[p]["agg"] for p in sorted(by)))}
                for ws, by in sorted(shares.items())}

    def summary(self, domain: str, level: str, area: str, window_ms: int) -> dict[str, Any] | None:
        """An area's newest window and its last 15 minutes, as operator figures."""
        series = area_series(domain, level, area)
        newest = max(self.open.get(series, {}), default=None)
        if newest is None:
            newest = self.history.newest_in(series)
        if newest is None:
            return None
        since = newest + window_ms - 15 * 60_000
        windows = self.area(domain, level, area, since)
        w = windows[newest]
        return {"window": {"start": newest, "end": w["window_end"], "closed": w["closed"]},
                "figures": w["agg"].figures(domain),
                "last_15m": recent(domain, {ws: v["agg"] for ws, v in windows.items()}, since)}


def entity_series(domain: str, entity: str) -> str:
    return f"e/{domain}/{entity}"


def area_series(domain: str, level: str, area: str) -> str:
    return f"a/{domain}/{level}/{area}"


def _json(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


class ReadModels:
    def __init__(self, settings: ApiSettings) -> None:
        topics = settings.topics
        self.vitals = Vitals()
        self.registry = (Registry.from_file(settings.registry_file)
                         if settings.registry_file else Registry())
        self.windows = Windows(WindowHistory(settings.data_dir / "windows.sqlite3", settings.window_history_min * 60_000))
        self.window_ms = settings.window_s * 1000
        self.alerts = AlertView(Archive(settings.data_dir / "alerts.sqlite3"))
        self.outlooks = Outlooks()
        self._views = [
            TopicView(settings.bootstrap, topics.alerts, apply_at=self.alerts.apply, fetch_max_wait_ms=FETCH_MAX_WAIT_MS),
            TopicView(settings.bootstrap, topics.vitals, self.vitals.apply),
            TopicView(settings.bootstrap, topics.registry, self.registry.apply),
            TopicView(settings.bootstrap, topics.aggregates, self.windows.apply_aggregate,
                      after_fetch=self.windows.flush),
            TopicView(settings.bootstrap, topics.rollups, self.windows.apply_rollup, after_fetch=self.windows.flush),
            TopicView(settings.bootstrap, topics.forecasts, self.outlooks.apply),
        ]

    async def start(self) -> None:
        for v in self._views:
            await v.start()

    async def stop(self) -> None:
        for v in self._views:
            await v.stop()
        self.alerts.archive.close()
        self.windows.history.close()

    @property
    def ready(self) -> dict[str, bool]:
        return {v.topic: v.caught_up for v in self._views}
