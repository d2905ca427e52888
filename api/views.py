"""Read models: what the API serves, built only from Kafka topics.

Because every view is rebuilt from compacted topics by each API process on its own, any
number of replicas serve the same answers, and a restarted API loses nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from api.alerts import AlertView, Archive
from services.config import Settings
from streams.registry import Registry
from streams.topics import DOMAINS
from streams.topicview import TopicView
from streams.windows import SHAPES, figures, merge_all, recent


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
        out = {d: {"events": 0, "rejected": 0, "late": 0, "records": 0, "closes": 0, "lag": 0,
                   "partitions": 0, "latest_event_ts": None} for d in DOMAINS}
        for doc in self.partitions.values():
            t = out.get(doc.get("domain"))
            if t is None:
                continue
            for k in ("events", "rejected", "late", "records", "closes", "lag"):
                t[k] += int(doc.get(k) or 0)
            t["partitions"] += 1
            if doc.get("max_ts") is not None:
                t["latest_event_ts"] = max(t["latest_event_ts"] or 0, doc["max_ts"])
        return out

    def latency(self) -> dict[str, tuple[list[int], float]]:
        """Per domain: processing-latency bucket counts and sum, added over partitions."""
        out: dict[str, tuple[list[int], float]] = {}
        for doc in self.partitions.values():
            lat = doc.get("latency")
            if not lat or doc.get("domain") not in DOMAINS:
                continue
            counts, total = out.get(doc["domain"], ([0] * len(lat["counts"]), 0.0))
            out[doc["domain"]] = ([a + b for a, b in zip(counts, lat["counts"])], total + lat["sum"])
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
    """Window figures per entity, and per area summed over the partitions' shares, from the
    aggregates and rollups topics. Keeps `retention_ms` of event time per entity or area,
    counted back from its newest window, so memory stays bounded on a long run."""

    # What the entity route serves by default (the last hour) and a little more: a read
    # model, not a time-series store; longer history belongs in Prometheus or a TSDB.
    def __init__(self, retention_ms: int = 75 * 60_000) -> None:
        self.retention_ms = retention_ms
        self.entities: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self.areas: dict[tuple[str, str, str], dict[int, dict[int, dict[str, Any]]]] = {}

    def apply_aggregate(self, key: bytes | None, value: bytes | None) -> None:
        doc = _json(value)
        if doc is not None:
            windows = self.entities.setdefault((doc["domain"], doc["entity"]), {})
            # only what the routes read: the area and names live once, in the registry
            windows[doc["window_start"]] = {k: doc[k] for k in ("window_end", "closed", "agg")}
            self._prune(windows)

    def apply_rollup(self, key: bytes | None, value: bytes | None) -> None:
        doc = _json(value)
        if doc is not None:
            windows = self.areas.setdefault((doc["domain"], doc["level"], doc["area"]), {})
            windows.setdefault(doc["window_start"], {})[doc["partition"]] = {
                k: doc[k] for k in ("window_end", "closed", "agg")}
            self._prune(windows)

    def _prune(self, windows: dict[int, Any]) -> None:
        if len(windows) > 1:
            horizon = max(windows) - self.retention_ms
            for ws in [ws for ws in windows if ws < horizon]:
                del windows[ws]

    def entity(self, domain: str, entity: str) -> dict[int, dict[str, Any]]:
        return self.entities.get((domain, entity), {})

    def area(self, domain: str, level: str, area: str) -> dict[int, dict[str, Any]]:
        """Per window start: the area's aggregate, its partitions' shares merged."""
        shape = SHAPES[domain]
        out = {}
        for ws, shares in self.areas.get((domain, level, area), {}).items():
            out[ws] = {"window_start": ws, "window_end": next(iter(shares.values()))["window_end"],
                       "closed": all(d["closed"] for d in shares.values()),
                       # Sorted, so every replica adds floats in the same order and agrees
                       # to the last bit.
                       "agg": merge_all(shape, (shares[p]["agg"] for p in sorted(shares)))}
        return out


    def summary(self, domain: str, level: str, area: str, window_ms: int) -> dict[str, Any] | None:
        """An area's newest window and its last 15 minutes, as operator figures."""
        windows = self.area(domain, level, area)
        if not windows:
            return None
        newest = max(windows)
        w = windows[newest]
        return {"window": {"start": newest, "end": w["window_end"], "closed": w["closed"]},
                "figures": figures(domain, w["agg"]),
                "last_15m": recent(domain, {ws: v["agg"] for ws, v in windows.items()},
                                   newest + window_ms - 15 * 60_000)}


def _json(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


class ReadModels:
    def __init__(self, settings: Settings) -> None:
        topics = settings.topics
        self.vitals = Vitals()
        self.registry = (Registry.from_file(settings.registry_file)
                         if settings.registry_file else Registry())
        self.windows = Windows()
        self.window_ms = settings.window_s * 1000
        self.alerts = AlertView(Archive(settings.data_dir / "alerts.sqlite3"))
        self._views = [
            TopicView(settings.bootstrap, topics.alerts, apply_at=self.alerts.apply),
            TopicView(settings.bootstrap, topics.vitals, self.vitals.apply),
            TopicView(settings.bootstrap, topics.registry, self.registry.apply),
            TopicView(settings.bootstrap, topics.aggregates, self.windows.apply_aggregate),
            TopicView(settings.bootstrap, topics.rollups, self.windows.apply_rollup),
        ]

    async def start(self) -> None:
        for v in self._views:
            await v.start()

    async def stop(self) -> None:
        for v in self._views:
            await v.stop()
        self.alerts.archive.close()

    @property
    def ready(self) -> dict[str, bool]:
        return {v.topic: v.caught_up for v in self._views}
