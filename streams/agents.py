"""The Faust agents: thin async shells around streams.processor and streams.alerting.

Each message an agent receives is one partition's share of a fetch (streams/transport.py,
`deliver_in_batches`). A domain agent hands those records to the processor and applies
what comes back: its outputs (dead letters, forwards, detections, closed windows) straight
to the producer as record batches (streams/produce.py; Faust's per-message send path
costs more than the record it carries), awaited, then the state writes to a table whose
changelog is co-partitioned with the source topic and written in batches, each key's
newest value once, before the next offset commit (`StateTable`). Live window figures
are published by a timer at most once a second per key, not once per event. The alert
agent folds detections and commands into alerts the same way: alert states out,
awaited, before its table remembers them.

Awaiting before the table write is what makes the pair safe without transactions: once
the state that produced an output is saved, the output is on the broker; a crash in
between replays the input, and the output comes out again, identical (deduplicated
downstream by its (episode, seq), the alert's seq, or a window's key). Live window
figures are the exception, published by the timer; after a crash the new owner of a
partition republishes its open windows once its tables are recovered.
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
from streams import events as contract
from streams import produce
from streams.alerting import BadInput, Policy, apply
from streams.codecs import ORJSON, UTF8
from streams.detectors import detector
from streams.produce import Output
from streams.processor import ORIGIN_HEADER, PartitionProcessor, Record
from streams.registry import Registry
from streams.topics import DOMAINS, LATENCY_BUCKETS
from streams.topicview import TopicView
from streams.transport import deliver_in_batches, flush_before_commit

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


class StateTable(faust.Table):
    """A Faust table whose changelog records its owner sends in batches and waits for.

    Faust sends each table write through its producer buffer, which hands records to
    the Kafka client one per event-loop turn; under live load (small batches, several
    writes per event) the buffer grew without bound in a soak run (1.35M records and
    8 GB after six minutes at 1,560 events/s) and offsets stopped being committed. Here
    a write only notes the key's newest value; `flush` produces them as record batches
    and awaits them before every offset commit (the transport's `flush_before_commit`,
    every 2.8 s), and when partitions are revoked. So a live step no longer waits for a
    broker round trip, and a key written by several steps between two commits is sent
    once (measured on the benchmark's single-event load: 0.82 changelog records per
    event, from 0.93 with a flush every second).

    Why a crash loses nothing: a key written again moves to the end, so each partition's
    progress key, written last in every step, stays last in a flush; the producer keeps
    a partition's order, so what survives a crash mid-flush is a prefix: if the progress
    key made it, so did everything it covers, and every other key skips by its own "o"
    the events it already holds. Flushes take turns, so a newer value of a key is never
    overtaken by an older one.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pending: dict[str, tuple[int, Any]] = {}
        self._flushing = asyncio.Lock()

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        await self.flush()

    def on_key_set(self, key: str, value: Any) -> None:
        self.pending.pop(key, None)
        self.pending[key] = (self.partition_for_key(key), value)

    def on_key_del(self, key: str) -> None:
        self.on_key_set(key, None)

    async def flush(self) -> None:
        async with self._flushing:
            pending, self.pending = self.pending, {}
            if not pending:
                return
            topic = self.changelog_topic.get_topic_name()
            last = await send_all(self.app, [
                (topic, key.encode(), None if value is None else orjson.dumps(value), partition, None)
                for key, (partition, value) in pending.items()])
            for (_, partition), offset in last.items():
                # where a rocksdb store's recovery resumes reading the changelog
                self.data.set_persisted_offset(TP(topic, partition), offset)


def state_table(app: faust.App, settings: Settings, name: str) -> StateTable:
    codecs = {"key_serializer": UTF8, "value_serializer": ORJSON}
    table = app.tables.add(StateTable(
        app, name=name, beacon=app.tables.beacon, partitions=settings.partitions,
        changelog_topic=app.topic(settings.topics.changelog(name), partitions=settings.partitions, **codecs)))
    # Faust picks a table's serializers from its key and value types (JSON unless they
    # are models); recovery must decode the changelog with the topic's codecs too.
    table.key_serializer, table.value_serializer = UTF8, ORJSON
    flush_before_commit(app, table.flush)
    # a partition's next owner recovers it from the changelog
    app.on_partitions_revoked.connect(table._on_revoked)
    return table


def write(table: StateTable, event: EventT, writes: Any) -> None:
    """Apply (key, value) writes in order, None deleting, on the event's partition; their
    changelog records go out before any commit covers the event."""
    with acting_for(event):
        for key, value in writes:
            if value is not None:
                table[key] = value
            elif key in table:
                del table[key]


async def send_all(app: faust.App, records: list[Output]) -> dict[tuple[str, int], int]:
    """Produce and wait until the broker has every record (streams/produce.py)."""
    return await produce.send_all(app.producer._ensure_producer(), records)


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
        # A live figure is read from the table and sent under this lock, and a step's
        # outputs are sent and its state written under it: so a window's live figures
        # never follow its closed ones on the aggregates topic.
        self.publishing = asyncio.Lock()
        # per partition: counts per latency bucket (the last is +Inf), and their sum
        self.latency: dict[int, dict[str, Any]] = {}
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
        open_keys = [k for k in list(self.state.keys()) if k[0] not in "#!" and self.processor.owner(k) in mine]
        self.dirty.update(open_keys)
        log.info("%s: after recovery, republishing %d window and area keys of partitions %s",
                 self.domain, len(open_keys), sorted(mine))

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
        # Every output of the step is on the broker before the state that made it: a crash
        # in between replays the records and sends the outputs again, never none of them.
        async with self.publishing:
            await send_all(self.app, [
                *((self.topics.deadletter, key, doc, None, None) for key, doc in step.deadletters),
                *((self.source.get_topic_name(), key, value, home, [(ORIGIN_HEADER, f"{p}:{o}".encode())])
                  for home, key, value, (p, o) in step.forwards),
                *((self.topics.alert_inputs, key, doc, None, None) for key, doc in step.detections),
                *((self._window_topic(kind), key, doc, None, None) for kind, key, doc in step.published)])
            write(self.state, event, step.writes)
        self.dirty |= step.touched
        progress = dict(step.writes[-1][1])
        for noisy in ("forwarded", "closing"):
            progress.pop(noisy)
        highwater = self.app.consumer.highwater(TP(self.source.get_topic_name(), partition))
        await self.app.producer.send(self.topics.vitals, f"{self.domain}/{partition}".encode(),
                   orjson.dumps({"domain": self.domain, "partition": partition, **progress,
                                 "lag": None if highwater is None else max(highwater - progress["offset"] - 1, 0),
                                 "latency": self._latency(partition, event.value),
                                 "worker": WORKER, "updated_at": int(time.time() * 1000)}),
                   None, None, None)

    def _latency(self, partition: int, records: list) -> dict[str, Any]:
        """This worker's cumulative histogram of record timestamp → processed, which the
        API sums over partitions into citybrain_processing_latency_seconds."""
        seconds = time.time() - np.fromiter((r.timestamp for r in records), float, len(records)) / 1000
        hist = self.latency.setdefault(partition, {"counts": [0] * (len(LATENCY_BUCKETS) + 1), "sum": 0.0})
        new = np.bincount(np.searchsorted(LATENCY_BUCKETS, seconds), minlength=len(hist["counts"]))
        hist["counts"] = [a + b for a, b in zip(hist["counts"], new.tolist())]
        hist["sum"] += float(seconds.sum())
        return hist

    def _window_topic(self, kind: str) -> str:
        return self.topics.aggregates if kind == "aggregates" else self.topics.rollups

    async def publish_live(self) -> None:
        async with self.publishing:
            dirty, self.dirty = self.dirty, set()
            live = []
            for key in dirty:
                value = self.state.get(key)
                if value is not None and not value["closed"]:
                    kind, key_bytes, doc = self.processor.publication(key, value)
                    live.append((self._window_topic(kind), key_bytes, doc, None, None))
            await send_all(self.app, live)


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
        rejected: list[Output] = []
        for r in event.value:
            key = (r.key or b"").decode(errors="replace")
            state = states[key] if key in states else self.state.get(key)
            if state is not None and r.offset <= state["o"]:
                continue  # applied before a crash
            try:
                state, alert = apply(state, orjson.loads(r.value or b"null"), self.policy)
            except (orjson.JSONDecodeError, BadInput) as exc:
                reason = f"alert input: {exc}" if isinstance(exc, BadInput) else f"not JSON: {exc}"
                rejected.append((self.topics.deadletter, r.key, contract.deadletter(
                    contract.Reject(reason, r.value or b""), self.topics.alert_inputs, partition, r.offset),
                    None, None))
                continue
            state["o"] = r.offset
            states[key] = state
            if alert is not None:
                changed[alert["id"]] = alert
        await send_all(self.app, rejected + [(self.topics.alerts, aid.encode(), orjson.dumps(a), None, None)
                                             for aid, a in changed.items()])
        write(self.state, event, states.items())


def register(app: faust.App, settings: Settings) -> list[DomainAgent]:
    registry = Registry.from_file(settings.registry_file) if settings.registry_file else Registry()
    feed = TopicView(settings.bootstrap, settings.topics.registry, registry.apply)

    @app.task
    async def follow_registry() -> None:
        await feed.start()

    AlertAgent(app, settings)
    return [DomainAgent(app, settings, d, registry, feed) for d in DOMAINS]
