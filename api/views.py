"""Read models: what the API serves, built only from Kafka topics.

Because every view is rebuilt from compacted topics by each API process on its own, any
number of replicas serve the same answers, and a restarted API loses nothing.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import orjson

from services.config import Settings
from streams.registry import Registry
from streams.topics import DOMAINS
from streams.topicview import TopicView


class Vitals:
    """Latest progress of every (domain, partition), as the workers publish it."""

    def __init__(self) -> None:
        self.partitions: dict[str, dict[str, Any]] = {}
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        try:
            self.partitions[key.decode()] = orjson.loads(value)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            pass

    def totals(self) -> dict[str, dict[str, Any]]:
        out = {d: {"events": 0, "rejected": 0, "records": 0, "partitions": 0,
                   "latest_event_ts": None} for d in DOMAINS}
        for doc in self.partitions.values():
            t = out.get(doc.get("domain"))
            if t is None:
                continue
            for k in ("events", "rejected", "records"):
                t[k] += int(doc.get(k) or 0)
            t["partitions"] += 1
            if doc.get("max_ts") is not None:
                t["latest_event_ts"] = max(t["latest_event_ts"] or 0, doc["max_ts"])
        return out

    def rates(self, totals: dict[str, dict[str, Any]], span_s: float = 10.0) -> dict[str, float]:
        """Events per second per domain over roughly the last `span_s`, from the totals
        seen at earlier calls; the first call has nothing to compare with and says 0."""
        now = time.monotonic()
        current = {d: totals[d]["events"] for d in DOMAINS}
        if not self._samples or now - self._samples[-1][0] >= 1.0:
            self._samples.append((now, current))
        base_t, base = next(((t, s) for t, s in self._samples if now - t <= span_s),
                            self._samples[0])
        dt = now - base_t
        return {d: round((current[d] - base[d]) / dt, 1) if dt > 0 else 0.0 for d in DOMAINS}


class ReadModels:
    def __init__(self, settings: Settings) -> None:
        topics = settings.topics
        self.vitals = Vitals()
        self.registry = (Registry.from_file(settings.registry_file)
                         if settings.registry_file else Registry())
        self._views = [
            TopicView(settings.bootstrap, topics.vitals, self.vitals.apply),
            TopicView(settings.bootstrap, topics.registry, self.registry.apply),
        ]

    async def start(self) -> None:
        for v in self._views:
            await v.start()

    async def stop(self) -> None:
        for v in self._views:
            await v.stop()

    @property
    def ready(self) -> dict[str, bool]:
        return {v.topic: v.caught_up for v in self._views}
