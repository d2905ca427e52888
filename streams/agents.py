"""Per-domain Faust agents: the thin async shell around streams.processor.

Each agent takes its topic in batches (`take_events`), hands each partition's records
to the processor, and applies what comes back: state writes to a Faust table whose
changelog is co-partitioned with the source topic, dead letters, forwards, closed
windows. Live window figures are published by a timer at most once a second per key,
not once per event.
"""

from __future__ import annotations

import asyncio
import logging
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
from streams.processor import ORIGIN_HEADER, PartitionProcessor, Record
from streams.registry import Registry
from streams.topics import DOMAINS
from streams.topicview import TopicView

log = logging.getLogger(__name__)

BATCH_MAX = 20_000
BATCH_WITHIN_S = 0.2
LIVE_EVERY_S = 1.0
REGISTRY_WAIT_S = 30.0

TABLES = tuple(f"{d}-state" for d in DOMAINS)


@contextmanager
def acting_for(event: EventT) -> Iterator[None]:
    """Faust sends a table write to the changelog partition (and rocksdb bucket) of the
    event being processed; a batch spans partitions, so each write names its own."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _origin(headers: Any) -> tuple[int, int] | None:
    for name, value in headers or ():
        if name == ORIGIN_HEADER:
            partition, _, offset = value.decode().partition(":")
            return int(partition), int(offset)
    return None


class DomainAgent:
    def __init__(self, app: faust.App, settings: Settings, domain: str, registry: Registry,
                 registry_feed: TopicView) -> None:
        topics = settings.topics
        self.domain = domain
        self.registry_feed = registry_feed
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = app.topic(topics.events(domain), partitions=settings.partitions, **raw)
        self.outputs = {name: app.topic(name, **raw) for name in
                        (topics.deadletter, topics.vitals, topics.aggregates, topics.rollups)}
        self.topics = topics
        self.state = app.Table(f"{domain}-state", partitions=settings.partitions, key_type=str)
        self.processor = PartitionProcessor(
            domain, topics.events(domain), settings.partitions, settings.window_s * 1000,
            settings.lateness_s * 1000, registry, settings.max_batch)
        self.dirty: set[str] = set()
        app.agent(self.source, name=f"citybrain.{domain}")(self.run)
        app.timer(LIVE_EVERY_S)(self.publish_live)
        app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_assigned(self, *args: Any, **kwargs: Any) -> None:
        self.processor.forget_partitions()
        self.dirty.clear()

    async def run(self, stream: faust.StreamT) -> None:
        deadline = time.monotonic() + REGISTRY_WAIT_S
        while not self.registry_feed.caught_up and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # areas would be "unassigned" until the registry is read
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await self.process(batch)

    async def process(self, batch: Sequence[EventT]) -> None:
        by_partition: dict[int, list[EventT]] = defaultdict(list)
        for ev in batch:
            by_partition[ev.message.partition].append(ev)
        for partition, evs in by_partition.items():
            records = [Record(partition, e.message.offset, e.message.key, e.message.value,
                              _origin(e.message.headers)) for e in evs]
            step = self.processor.step(partition, records, self.state, self.state.keys)
            for key, doc in step.deadletters:
                await self.outputs[self.topics.deadletter].send(key=key, value=doc)
            for home, key, value, (p, o) in step.forwards:
                await self.source.send(key=key, value=value, partition=home,
                                       headers=[(ORIGIN_HEADER, f"{p}:{o}".encode())])
            with acting_for(evs[-1]):
                for key, value in step.writes:
                    if value is not None:
                        self.state[key] = value
                    elif key in self.state:
                        del self.state[key]
            for kind, key, doc in step.published:
                await self._publish(kind, key, doc)
            self.dirty |= step.touched
            progress = dict(step.writes[-1][1])
            for noisy in ("forwarded", "closing"):
                progress.pop(noisy)
            await self.outputs[self.topics.vitals].send(
                key=f"{self.domain}/{partition}".encode(),
                value=orjson.dumps({"domain": self.domain, "partition": partition, **progress,
                                    "updated_at": int(time.time() * 1000)}))

    async def _publish(self, kind: str, key: bytes, doc: bytes | None) -> None:
        topic = self.topics.aggregates if kind == "aggregates" else self.topics.rollups
        await self.outputs[topic].send(key=key, value=doc)

    async def publish_live(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for key in dirty:
            value = self.state.get(key)
            if value is not None and not value["closed"]:
                await self._publish(*self.processor.publication(key, value))


def register(app: faust.App, settings: Settings) -> list[DomainAgent]:
    registry = Registry.from_file(settings.registry_file) if settings.registry_file else Registry()
    feed = TopicView(settings.bootstrap, settings.topics.registry, registry.apply)

    @app.task
    async def follow_registry() -> None:
        await feed.start()

    return [DomainAgent(app, settings, d, registry, feed) for d in DOMAINS]
