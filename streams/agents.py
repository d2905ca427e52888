"""Per-domain ingest agents: raw records → validated events → partition state → vitals.

Each agent takes its topic in batches (`take_events`) and writes state once per touched
partition per batch, never once per event. State lives in a Faust table whose changelog
is co-partitioned with the source topic, and every state value carries the offset of the
last record applied to it: a record replayed after a crash (at-least-once delivery, the
embedded broker has no transactions) is recognised and skipped, so counts are
effectively-once.
"""

from __future__ import annotations

import time
import weakref
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import faust
import orjson
from faust.streams import _current_event
from faust.types import EventT

from services.config import Settings
from streams import events as contract
from streams.topics import DOMAINS

BATCH_MAX = 10_000
BATCH_WITHIN_S = 0.1

TABLES = tuple(f"{d}-progress" for d in DOMAINS)


@contextmanager
def acting_for(event: EventT) -> Iterator[None]:
    """Faust sends a table write to the changelog partition (and rocksdb bucket) of the
    event being processed; a batch spans partitions, so each write names its own."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def new_progress() -> dict[str, Any]:
    return {"offset": -1, "records": 0, "events": 0, "rejected": 0, "max_ts": None}


class DomainIngest:
    def __init__(self, app: faust.App, settings: Settings, domain: str) -> None:
        topics = settings.topics
        self.domain = domain
        self.max_batch = settings.max_batch
        self.source = app.topic(topics.events(domain), key_serializer="raw",
                                value_serializer="raw", partitions=settings.partitions)
        self.deadletters = app.topic(topics.deadletter, key_serializer="raw", value_serializer="raw")
        self.vitals = app.topic(topics.vitals, key_serializer="raw", value_serializer="raw")
        self.progress = app.Table(f"{domain}-progress", partitions=settings.partitions,
                                  key_type=str)
        app.agent(self.source, name=f"citybrain.ingest.{domain}")(self.run)

    async def run(self, stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await self.process(batch)

    async def process(self, batch: Sequence[EventT]) -> None:
        by_partition: dict[int, list[EventT]] = defaultdict(list)
        for ev in batch:
            by_partition[ev.message.partition].append(ev)
        for partition, evs in by_partition.items():
            key = str(partition)
            state = self.progress.get(key) or new_progress()
            for ev in evs:
                msg = ev.message
                if msg.offset <= state["offset"]:
                    continue  # applied before a crash; its changelog write survived
                good, bad = contract.decode(self.domain, msg.value, self.max_batch)
                for reject in bad:
                    await self.deadletters.send(
                        key=msg.key,
                        value=contract.deadletter(reject, msg.topic, partition, msg.offset))
                state["records"] += 1
                state["events"] += len(good)
                state["rejected"] += len(bad)
                if good:
                    newest = max(e["ts"] for e in good)
                    state["max_ts"] = max(state["max_ts"] or newest, newest)
                state["offset"] = msg.offset
            with acting_for(evs[-1]):
                self.progress[key] = state
            await self.vitals.send(key=f"{self.domain}/{partition}".encode(),
                                   value=orjson.dumps(self.vitals_doc(partition, state)))

    def vitals_doc(self, partition: int, state: dict[str, Any]) -> dict[str, Any]:
        return {"domain": self.domain, "partition": partition, **state,
                "updated_at": int(time.time() * 1000)}


def register(app: faust.App, settings: Settings) -> list[DomainIngest]:
    return [DomainIngest(app, settings, d) for d in DOMAINS]
