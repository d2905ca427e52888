"""The Faust agents: thin async shells around streams.processor and streams.alerting.

Each message an agent receives is one partition's share of a fetch (streams/transport.py,
`deliver_in_batches`). A domain agent hands those records to the processor and applies
what comes back: detections first, awaited, then state writes to a Faust table whose
changelog is co-partitioned with the source topic, then dead letters, forwards and closed
windows straight to the producer (Faust's per-message send path costs more than the
record it carries). Live window figures are published by a timer at most once a second
per key, not once per event. The alert agent folds detections and commands into alerts
the same way: alert states out, awaited, before its table remembers them.

Awaiting before the table write is what makes the pair safe without transactions: once
the state that produced an output is saved, the output is on the broker; a crash in
between replays the input, and the output comes out again, identical (deduplicated
downstream by its (episode, seq) or the alert's seq).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import faust
import numpy as np
import orjson
from faust.streams import _current_event
from faust.types import TP, EventT

from services.config import Settings
from streams.codecs import ORJSON, UTF8
from streams import events as contract
from streams.alerting import BadInput, Policy, apply
from streams.detectors import detector
from streams.processor import ORIGIN_HEADER, PartitionProcessor, Record
from streams.registry import Registry
from streams.topics import DOMAINS, LATENCY_BUCKETS
from streams.topicview import TopicView
from streams.transport import deliver_in_batches

log = logging.getLogger(__name__)

LIVE_EVERY_S = 1.0
REGISTRY_WAIT_S = 30.0

TABLES = tuple(f"{d}-state" for d in DOMAINS) + ("alerts-state",)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who owns a partition, in its vitals


@contextmanager
def acting_for(event: EventT) -> Iterator[None]:
    """Faust sends a table write to the changelog partition (and rocksdb bucket) of the
    event being processed; a batch spans partitions, so each write names its own."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def state_table(app: faust.App, settings: Settings, name: str) -> faust.Table:
    codecs = {"key_serializer": UTF8, "value_serializer": ORJSON}
    table = app.Table(name, partitions=settings.partitions,
                      changelog_topic=app.topic(settings.topics.changelog(name),
                                                partitions=settings.partitions, **codecs))
    # Faust picks a table's serializers from its key and value types (JSON unless they
    # are models); the changelog writes must use the topic's codecs too.
    table.key_serializer, table.value_serializer = UTF8, ORJSON
    return table


def write(table: faust.Table, event: EventT, writes: Any) -> None:
    """Apply (key, value) writes in order, None deleting, on the event's partition."""
    with acting_for(event):
        for key, value in writes:
            if value is not None:
                table[key] = value
            elif key in table:
                del table[key]


async def send_all(app: faust.App, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Produce and wait until the broker has every record."""
    futures = [await app.producer.send(topic, key, value, None, None, None) for key, value in records]
    for fut in futures:
        await fut


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
        self.app = app
        self.source = deliver_in_batches(app, topics.events(domain))
        self.topics = topics
        self.state = state_table(app, settings, f"{domain}-state")
        self.processor = PartitionProcessor(
            domain, topics.events(domain), settings.partitions, settings.window_s * 1000,
            settings.lateness_s * 1000, registry, settings.max_batch,
            detector=detector(domain, settings.rule_book(), registry))
        self.dirty: set[str] = set()
        # per partition: counts per latency bucket (the last is +Inf), and their sum
        self.latency: dict[int, list] = {}
        app.agent(self.source, name=f"citybrain.{domain}")(self.run)
        app.timer(LIVE_EVERY_S)(self.publish_live)
        app.on_partitions_revoked.connect(self._on_rebalance)
        app.on_partitions_assigned.connect(self._on_rebalance)
        self.state.on_recover(self._announce_open_windows)

    async def _on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        # Unpublished figures of a partition that moves are the new owner's to announce
        # (below); publishing them here could overwrite newer ones from that owner.
        self.processor.forget_partitions()
        self.dirty.clear()

    async def _announce_open_windows(self) -> None:
        """Once the tables are recovered, republish every open window of the partitions
        this worker now owns: a previous owner killed between a state write and its next
        live publish left the latest figures in the changelog only, and a window that gets
        no more events would show stale figures until it closed."""
        topic = self.source.get_topic_name()
        mine = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        self.dirty.update(k for k in list(self.state.keys())
                          if k[0] not in "#!" and self.processor.owner(k) in mine)

    async def run(self, stream: faust.StreamT) -> None:
        deadline = time.monotonic() + REGISTRY_WAIT_S
        while not self.registry_feed.caught_up and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # areas would be "unassigned" until the registry is read
        async for event in stream.events():
            await self.process(event)

    async def process(self, event: EventT) -> None:
        partition = event.message.partition
        records = [Record(partition, r.offset, r.key, r.value, _origin(r.headers))
                   for r in event.value]
        step = self.processor.step(partition, records, self.state, self.state.keys)
        send = self.app.producer.send
        for key, doc in step.deadletters:
            await send(self.topics.deadletter, key, doc, None, None, None)
        for home, key, value, (p, o) in step.forwards:
            await send(self.source.get_topic_name(), key, value, home, None,
                       [(ORIGIN_HEADER, f"{p}:{o}".encode())])
        if step.detections:
            await send_all(self.app, self.topics.alert_inputs, step.detections)
        write(self.state, event, step.writes)
        for kind, key, doc in step.published:
            await self._publish(kind, key, doc)
        self.dirty |= step.touched
        progress = dict(step.writes[-1][1])
        for noisy in ("forwarded", "closing"):
            progress.pop(noisy)
        highwater = self.app.consumer.highwater(TP(self.source.get_topic_name(), partition))
        await send(self.topics.vitals, f"{self.domain}/{partition}".encode(),
                   orjson.dumps({"domain": self.domain, "partition": partition, **progress,
                                 "lag": None if highwater is None else max(highwater - progress["offset"] - 1, 0),
                                 "latency": self._latency(partition, event.value),
                                 "worker": WORKER, "updated_at": int(time.time() * 1000)}),
                   None, None, None)

    def _latency(self, partition: int, records: list) -> dict[str, Any]:
        """This worker's cumulative histogram of record timestamp → processed, which the
        API sums over partitions into citybrain_processing_latency_seconds."""
        seconds = time.time() - np.fromiter((r.timestamp for r in records), float, len(records)) / 1000
        counts, total = self.latency.setdefault(partition, [[0] * (len(LATENCY_BUCKETS) + 1), 0.0])
        for i, n in enumerate(np.bincount(np.searchsorted(LATENCY_BUCKETS, seconds),
                                          minlength=len(counts)).tolist()):
            counts[i] += n
        self.latency[partition][1] = total + float(seconds.sum())
        return {"counts": counts, "sum": self.latency[partition][1]}

    async def _publish(self, kind: str, key: bytes, doc: bytes | None) -> None:
        topic = self.topics.aggregates if kind == "aggregates" else self.topics.rollups
        await self.app.producer.send(topic, key, doc, None, None, None)

    async def publish_live(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for key in dirty:
            value = self.state.get(key)
            if value is not None and not value["closed"]:
                await self._publish(*self.processor.publication(key, value))


class AlertAgent:
    """Alert states from the alert-inputs topic (streams/alerting.py), one table key per
    (rule, entity) holding its alert and the offset of the last input applied."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app, self.topics = app, settings.topics
        self.policy = Policy(settings.alert_flap_s, settings.alert_escalate_s)
        self.source = deliver_in_batches(app, self.topics.alert_inputs)
        self.state = state_table(app, settings, "alerts-state")
        app.agent(self.source, name="citybrain.alerts")(self.run)

    async def run(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            await self.process(event)

    async def process(self, event: EventT) -> None:
        partition = event.message.partition
        states: dict[str, Any] = {}
        changed: dict[str, dict[str, Any]] = {}
        for r in event.value:
            key = (r.key or b"").decode(errors="replace")
            state = states[key] if key in states else self.state.get(key)
            if state is not None and r.offset <= state["o"]:
                continue  # applied before a crash
            try:
                state, alert = apply(state, orjson.loads(r.value or b"null"), self.policy)
            except (orjson.JSONDecodeError, BadInput) as exc:
                reason = f"alert input: {exc}" if isinstance(exc, BadInput) else f"not JSON: {exc}"
                await self.app.producer.send(self.topics.deadletter, r.key, contract.deadletter(
                    contract.Reject(reason, r.value or b""), self.topics.alert_inputs, partition, r.offset),
                    None, None, None)
                continue
            state["o"] = r.offset
            states[key] = state
            if alert is not None:
                changed[alert["id"]] = alert
        await send_all(self.app, self.topics.alerts,
                       [(aid.encode(), orjson.dumps(a)) for aid, a in changed.items()])
        write(self.state, event, states.items())


def register(app: faust.App, settings: Settings) -> list[DomainAgent]:
    registry = Registry.from_file(settings.registry_file) if settings.registry_file else Registry()
    feed = TopicView(settings.bootstrap, settings.topics.registry, registry.apply)

    @app.task
    async def follow_registry() -> None:
        await feed.start()

    AlertAgent(app, settings)
    return [DomainAgent(app, settings, d, registry, feed) for d in DOMAINS]
