"""The Faust agents: thin async shells around streams.processor and streams.alert_step.

Each message an agent receives is one partition's share of a fetch (streams/transport.py,
`deliver_in_batches`). A domain agent keeps each of its partitions' state in memory as
numpy blocks (streams/state.py), hands the records to the processor, and sends what
comes back (dead letters, detections, closed windows) straight to the producer
as record batches (streams/produce.py), awaited. A timer publishes the figures the steps
changed (one record per partition and window, not one per key: entity rows every 4 s,
area shares every 5 s) and, each second, the vitals of the partitions that moved.

State is stored as snapshots in a Faust table whose changelog is co-partitioned with the
source topic. Before each offset commit (the transport's `flush_before_commit`, every
2.8 s) the agent writes a snapshot of each partition that changed, when it is worth it:
the partition went quiet, or the input since the last snapshot has grown to four times its
size, or two minutes have passed; and always when partitions are revoked. The group's
committed offset of a source partition is the offset its newest snapshot covers
(`commit_ceilings`; the bookkeeping of both is streams/snapshots.py, shared with the
forecast agent), so a crash replays the records after the snapshot, and every output
of the replay repeats one already sent (deduplicated downstream by its (episode, seq),
the alert's seq, or a window record's key). The alert agent folds detections and
commands into alerts the same way, one table key per alert.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import faust
import numpy as np
import orjson
from faust.types import TP, EventT

from streams import alert_step, produce
from streams.alerting import Policy
from streams.codecs import ORJSON, UTF8
from streams.detectors import detector
from streams.produce import Output
from streams.processor import PartitionProcessor, Record, Touched
from streams.registry import Registry
from streams.settings import StreamSettings
from streams.snapshots import Snapshots
from streams.state import PartitionState, Snapshot, load, snapshot_writes
from streams.topics import ALERTS_TABLE, DOMAINS, LATENCY_BUCKETS, domain_table
from streams.topicview import TopicView
from streams.transport import (acting_for, acting_for_partition, batches, commit_ceilings, deliver_in_batches,
                               flush_before_commit, kafka_producer)

log = logging.getLogger(__name__)

LIVE_EVERY_S = 1.0  # the live timer: vitals of the partitions that moved, each tick
# Changed window figures go out every this many ticks: an entity's row every 4 s, an
# area's share every 5 s (the dashboard refreshes a device every 10 s, the overview's
# totals every 2 s). Measured at 10k events/s live, publishing both every second wrote
# 2.2 bytes of window figures per input byte, two thirds of it area shares; at 2 s and
# 5 s, entity rows 0.69 and area shares 0.60 of 2.17 bytes written per input byte.
ENTITY_FIGURES_EVERY = 4
AREA_FIGURES_EVERY = 5
REGISTRY_WAIT_S = 30.0
# A partition's snapshot is rewritten once the input since the last one is this many
# times its size (so snapshots cost at most a quarter byte per input byte), or after
# SNAPSHOT_MAX_AGE_S, which bounds the replay after a crash (two minutes of input: about
# 12 s of a worker's time at 10k events/s). At 60 s, a busy gate partition's snapshots
# were 0.74 bytes per input byte at 10k events/s live, its state being larger than a
# minute's input.
SNAPSHOT_INPUT_RATIO = 4.0
SNAPSHOT_MAX_AGE_S = 120.0
AHEAD_SHOWN = 20  # entities whose clocks run furthest ahead, per partition, in its vitals

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who owns a partition, in its vitals


class StateTable(faust.Table):
    """A Faust table whose changelog records its owner sends in batches and waits for.

    Faust sends each table write through its producer buffer, which hands records to
    the Kafka client one per event-loop turn; under live load the buffer grew without
    bound in a soak run (1.35M records and 8 GB after six minutes at 1,560 events/s) and
    offsets stopped being committed. Here a write only notes the key's newest value;
    `flush` produces them as record batches and awaits them, before every offset commit
    and when partitions are revoked. Flushes take turns, so a newer value of a key is
    never overtaken by an older one, and a partition's writes keep their order.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pending: dict[str, tuple[int, Any]] = {}
        self._flushing = asyncio.Lock()

    def on_key_set(self, key: str, value: Any) -> None:
        self.pending.pop(key, None)
        self.pending[key] = (self.partition_for_key(key), value)
        self.app.sensors.on_table_set(self, key, value)  # Faust's monitoring, as its own on_key_set

    def on_key_del(self, key: str) -> None:
        self.on_key_set(key, None)

    def put(self, partition: int, key: str, value: bytes) -> None:
        """Store a value for `partition` outside of any event (a snapshot chunk)."""
        with acting_for_partition(partition):
            self.data[key] = value
        self.pending.pop(key, None)
        self.pending[key] = (partition, value)

    async def flush(self) -> None:
        async with self._flushing:
            pending, self.pending = self.pending, {}
            if not pending:
                return
            topic = self.changelog_topic.get_topic_name()
            encode = (lambda v: v) if self.value_serializer == "raw" else orjson.dumps
            last = await send_all(self.app, [
                (topic, key.encode(), None if value is None else encode(value), partition, None)
                for key, (partition, value) in pending.items()])
            for (_, partition), offset in last.items():
                # where a rocksdb store's recovery resumes reading the changelog
                self.data.set_persisted_offset(TP(topic, partition), offset)


def state_table(app: faust.App, settings: StreamSettings, name: str, raw: bool = False) -> StateTable:
    """A table co-partitioned with the sources; values as JSON, or as bytes (`raw`)."""
    value_codec = "raw" if raw else ORJSON
    codecs = {"key_serializer": UTF8, "value_serializer": value_codec}
    table = app.tables.add(StateTable(
        app, name=name, beacon=app.tables.beacon, partitions=settings.partitions,
        changelog_topic=app.topic(settings.topics.changelog(name), partitions=settings.partitions, **codecs)))
    # Faust picks a table's serializers from its key and value types (JSON unless they
    # are models); recovery must decode the changelog with the topic's codecs too.
    table.key_serializer, table.value_serializer = UTF8, value_codec
    return table


def write(table: StateTable, event: EventT, writes: Any) -> None:
    """Apply (key, value) writes in order on the event's partition; their changelog
    records go out before any commit covers the event."""
    with acting_for(event):
        for key, value in writes:
            table[key] = value


async def send_all(app: faust.App, records: list[Output]) -> dict[tuple[str, int], int]:
    """Produce and wait until the broker has every record (streams/produce.py)."""
    return await produce.send_all(kafka_producer(app), records)


SnapshotWrites = Callable[[int, Snapshot | None], tuple[Snapshot, list[tuple[str, bytes]]]]


async def store_snapshots(table: StateTable, snapshots: Snapshots, between_steps: asyncio.Lock, force: bool,
                          writes: SnapshotWrites) -> None:
    """Snapshot the partitions that are due (every changed one when `force`), then wait
    until the table's changelog has them. `writes(partition, previous snapshot)` gives a
    partition's snapshot and its table writes (streams/state.py); `between_steps` is the
    lock a step holds while it sends its outputs, so a snapshot never covers records whose
    outputs are not on the broker."""
    staged: dict[int, Snapshot] = {}
    async with between_steps:
        now = time.monotonic()
        for p in snapshots.due(force, now):
            meta, puts = writes(p, snapshots.newest(p))
            for key, value in puts:
                table.put(p, key, value)
            snapshots.taken(p, meta, now)
            staged[p] = meta
    await table.flush()
    snapshots.stored(staged)


@dataclass
class Owned:
    """A partition this worker processes: its state, and what is not yet shown."""

    state: PartitionState
    touched: dict[int, Touched] = field(default_factory=dict)  # window start → figures to publish
    latency: dict[str, Any] = field(default_factory=lambda: {"counts": [0] * (len(LATENCY_BUCKETS) + 1),
                                                             "sum": 0.0})
    vitals_due: bool = True
    ahead: dict[str, float] = field(default_factory=dict)  # entity → seconds ahead of the clock, latest


class DomainAgent:
    def __init__(self, app: faust.App, settings: StreamSettings, domain: str, registry: Registry,
                 registry_feed: TopicView) -> None:
        topics = settings.topics
        self.domain = domain
        self.registry_feed = registry_feed
        self.app = app
        self.source = deliver_in_batches(app, topics.events(domain))
        self.topic = self.source.get_topic_name()
        self.topics = topics
        self.table = state_table(app, settings, domain_table(domain), raw=True)
        self.processor = PartitionProcessor(
            domain, topics.events(domain), settings.partitions, settings.window_s * 1000,
            settings.lateness_s * 1000, registry, settings.max_batch,
            detector=detector(domain, settings.rule_book(), registry),
            max_ahead_ms=int(settings.clock_skew_s * 1000))
        self.owned: dict[int, Owned] = {}
        self.ticks = 0  # of the live timer
        self.snapshots = Snapshots(SNAPSHOT_MAX_AGE_S, SNAPSHOT_INPUT_RATIO)
        # Held by a step and the sending of its outputs, by the live publication and by
        # the choice of snapshots: so a window's live figures never follow its closed
        # ones, and no snapshot covers a step whose outputs are not on the broker.
        self.publishing = asyncio.Lock()
        app.agent(self.source, name=f"citybrain.{domain}")(self.run)
        app.timer(LIVE_EVERY_S)(self.publish_live)
        flush_before_commit(app, self.flush)
        commit_ceilings(app, self.topic, lambda: self.snapshots.ceilings)
        app.on_partitions_revoked.connect(self._on_revoked)
        self.table.on_recover(self._load_assigned)

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        # Every partition is snapshotted before the group moves it, and reloaded from the
        # table afterwards (a partition this worker keeps loads what it just stored).
        await self.flush(force=True)
        for p in list(self.owned):
            self.processor.forget(p)
        self.owned.clear()
        self.snapshots.forget()

    async def _load_assigned(self) -> None:
        """Once the tables are recovered, load every partition this worker now owns, and
        republish their open windows: a previous owner killed before its next live
        publication left the latest figures in its snapshot only."""
        mine = [tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.topic]
        for p in mine:
            self._owned(p)
        log.info("%s: partitions %s loaded", self.domain, sorted(mine))

    def _owned(self, partition: int) -> Owned:
        owned = self.owned.get(partition)
        if owned is None:
            state, meta = load(self.processor.shape, partition, self.table.data.get)
            owned = self.owned[partition] = Owned(state, touched=self.processor.open_touched(state))
            self.snapshots.loaded(partition, meta, time.monotonic())
            log.info("%s[%d]: %s", self.domain, partition,
                     "no snapshot, from the start" if meta is None else f"snapshot through offset {meta.offset} loaded")
        return owned

    async def run(self, stream: faust.StreamT) -> None:
        deadline = time.monotonic() + REGISTRY_WAIT_S
        while not self.registry_feed.caught_up and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # areas would be "unassigned" until the registry is read
        async for event in batches(self.app, stream):
            await self.process(event)

    async def process(self, event: EventT) -> None:
        partition = event.message.partition
        owned = self._owned(partition)
        records = [Record(partition, r.offset, r.key, r.value) for r in event.value]
        # The step and the sending of its outputs hold the lock that snapshots take too: a
        # snapshot that covered a step whose outputs were still on their way would, after
        # a crash, skip the records whose outputs never arrived.
        async with self.publishing:
            step = self.processor.step(partition, records, owned.state)
            await send_all(self.app, [
                *((self.topics.deadletter, key, doc, None, None) for key, doc in step.deadletters),
                *((self.topics.alert_inputs, key, doc, None, None) for key, doc in step.detections),
                *((self._window_topic(kind), key, doc, partition, None) for kind, key, doc in step.closed)])
            self.snapshots.applied(partition, sum(len(r.value or b"") for r in records))
            owned.vitals_due = True
            for ws in step.closed_starts:
                owned.touched.pop(ws, None)
            for ws, touched in step.touched.items():
                owned.touched.setdefault(ws, Touched()).add(touched)
        if step.ahead:
            owned.ahead.update(step.ahead)
            owned.ahead = dict(sorted(owned.ahead.items(), key=lambda kv: -kv[1])[:AHEAD_SHOWN])
        self._count_latency(owned, event.value)

    @staticmethod
    def _count_latency(owned: Owned, records: list) -> None:
        """This worker's cumulative histogram of record timestamp → processed, which the
        API sums over partitions into citybrain_processing_latency_seconds."""
        seconds = time.time() - np.fromiter((r.timestamp for r in records), float, len(records)) / 1000
        hist = owned.latency
        new = np.bincount(np.searchsorted(LATENCY_BUCKETS, seconds), minlength=len(hist["counts"]))
        hist["counts"] = [a + b for a, b in zip(hist["counts"], new.tolist())]
        hist["sum"] += float(seconds.sum())

    def _window_topic(self, kind: str) -> str:
        return self.topics.aggregates if kind == "aggregates" else self.topics.rollups

    async def publish_live(self) -> None:
        """The figures changed since their last publication (entity rows every
        ENTITY_FIGURES_EVERY ticks, area shares every AREA_FIGURES_EVERY), and the vitals of
        every partition that moved: one record per partition and window (or a few)."""
        self.ticks += 1
        entities_due = self.ticks % ENTITY_FIGURES_EVERY == 0
        areas_due = self.ticks % AREA_FIGURES_EVERY == 0
        async with self.publishing:
            out: list[Output] = []
            for p, owned in list(self.owned.items()):
                for ws, t in sorted(owned.touched.items()):
                    due = Touched(t.entities if entities_due else [], t.areas if areas_due else {})
                    t.entities, t.areas = ([] if entities_due else t.entities), ({} if areas_due else t.areas)
                    out += [(self._window_topic(kind), key, doc, p, None)
                            for kind, key, doc in self.processor.live_records(p, owned.state, ws, due)]
                owned.touched = {ws: t for ws, t in owned.touched.items() if t.entities or t.areas}
                if owned.vitals_due:
                    owned.vitals_due = False
                    out.append((self.topics.vitals, f"{self.domain}/{p}".encode(), self._vitals(p, owned), None, None))
            await send_all(self.app, out)

    def _vitals(self, partition: int, owned: Owned) -> bytes:
        progress = owned.state.progress
        highwater = self.app.consumer.highwater(TP(self.topic, partition))
        return orjson.dumps({"domain": self.domain, "partition": partition, **progress.public(),
                             "lag": None if highwater is None else max(highwater - progress.offset - 1, 0),
                             "latency": owned.latency, "entities": len(owned.state.entities),
                             "clock_ahead_s": owned.ahead,
                             "worker": WORKER, "updated_at": int(time.time() * 1000)})

    async def flush(self, force: bool = False) -> None:
        """Snapshot the partitions that are due (every changed one when `force`)."""
        await store_snapshots(self.table, self.snapshots, self.publishing, force,
                              lambda p, previous: snapshot_writes(p, self.owned[p].state, previous))


class AlertAgent:
    """Alert states from the alert-inputs topic (streams/alert_step.py), one table key per
    (rule, entity) holding its alert and the offset of the last input applied."""

    def __init__(self, app: faust.App, settings: StreamSettings) -> None:
        self.app, self.topics = app, settings.topics
        self.policy = Policy(settings.alert_flap_s, settings.alert_escalate_s)
        self.source = deliver_in_batches(app, self.topics.alert_inputs)
        self.state = state_table(app, settings, ALERTS_TABLE)
        flush_before_commit(app, self.state.flush)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.agent(self.source, name="citybrain.alerts")(self.run)

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        await self.state.flush()

    async def run(self, stream: faust.StreamT) -> None:
        async for event in batches(self.app, stream):
            await self.process(event)

    async def process(self, event: EventT) -> None:
        partition = event.message.partition
        records = [Record(partition, r.offset, r.key, r.value) for r in event.value]
        out = alert_step.step(records, self.topics.alert_inputs, self.state.get, self.policy)
        await send_all(self.app, [
            *((self.topics.deadletter, key, doc, None, None) for key, doc in out.deadletters),
            *((self.topics.alerts, aid.encode(), orjson.dumps(a), None, None) for aid, a in out.alerts.items())])
        write(self.state, event, out.states.items())


def register(app: faust.App, settings: StreamSettings) -> list[DomainAgent]:
    registry = Registry.from_file(settings.registry_file) if settings.registry_file else Registry()
    feed = TopicView(settings.bootstrap, settings.topics.registry, registry.apply)

    @app.task
    async def follow_registry() -> None:
        await feed.start()

    AlertAgent(app, settings)
    return [DomainAgent(app, settings, d, registry, feed) for d in DOMAINS]
