"""The Faust shell of early warning (streams/early_warning.py), in the stream workers.

    domain agents ──closed windows──► citybrain.aggregates ──(forecast agent)──► citybrain.alert-inputs
                                                                             └──► citybrain.forecasts

The aggregates topic is co-partitioned with the events (its partition p holds the
windows of the events' partition p), so the group gives this agent's partition p to the
worker that owns the events' partition p. Per partition one `Warnings` state (early
warning's, and the outlook of every device series, streams/outlook.py), stored in
the `forecast-state` table the way the domain agents store theirs (streams/state.py): as
chunks under `<p>/<buffer>/<i>`, then `<p>/meta` naming the buffer, two buffers taking
turns so a crash mid-write leaves the previous snapshot whole. A partition that moved on
is stored before an offset commit once it goes quiet or every SNAPSHOT_EVERY_S while it
is busy, and when partitions are revoked, and the group commits its aggregates partition
at the offset the snapshot covers (`commit_ceilings`; the bookkeeping is the domain agents'
own, streams/snapshots.py): a crash replays the records after it, which learn the same
windows again in the same order (the step skips what the state covers). Detections are
sent before a snapshot can cover them (a step and its sending hold the lock a snapshot
takes): after a crash they are sent again, with the same (episode, seq), which the alert
agent ignores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import EventT

from streams.agents import REGISTRY_WAIT_S, send_all, state_table, store_snapshots
from streams.early_warning import EarlyWarning, Warnings, encode
from streams.processor import Record
from streams.registry import Registry
from streams.settings import StreamSettings
from streams.snapshots import Snapshots
from streams.state import Snapshot, chunk_writes, meta_key, snapshot_chunks
from streams.topics import FORECAST_TABLE
from streams.topicview import TopicView
from streams.transport import batches, commit_ceilings, deliver_in_batches, flush_before_commit

log = logging.getLogger(__name__)


# Stored after every learnt window, the early-warning snapshots (about 7.5 KB a feeder)
# wrote 0.37 MB/s to the broker for a 1,000 events/s city (2,941 feeders), more than its
# events. With the outlook (2.8 KB for each of the city's 38,237 device series: 108 MB),
# every ten minutes would write 1.4 bytes per input byte, every hour 0.23; every two hours
# writes 0.12, and a crash replays at most two hours of windows, which learn in about five
# seconds (38 ms a minute of the whole city's windows, benchmarks/README.md).
SNAPSHOT_EVERY_S = 7200.0
QUIET_S = 20.0


class ForecastAgent:
    def __init__(self, app: faust.App, settings: StreamSettings, step: EarlyWarning, feed: TopicView) -> None:
        self.app, self.topics, self.step, self.feed = app, settings.topics, step, feed
        self.table = state_table(app, settings, FORECAST_TABLE, raw=True)
        self.source = deliver_in_batches(app, self.topics.aggregates)
        self.owned: dict[int, Warnings] = {}
        # stored when it moved on and went quiet, or SNAPSHOT_EVERY_S after the last
        # staggered: the partitions' states (108 MB in all for that city) are not stored
        # in one burst, which took 0.1-0.6 s to encode (63 MB) while the steps waited.
        # Quiet after QUIET_S without a record: an aggregates partition gets one every
        # second or so, and judged quiet at any flush between two, each partition's whole
        # state was stored over and over (1.08 GB in a 30-minute soak, 4.6 bytes per
        # input byte).
        self.snapshots = Snapshots(SNAPSHOT_EVERY_S, stagger=True, quiet_s=QUIET_S)
        self.stepping = asyncio.Lock()  # a step and the sending of its detections; a snapshot
        flush_before_commit(app, self.flush)
        commit_ceilings(app, self.source.get_topic_name(), lambda: self.snapshots.ceilings)
        app.on_partitions_revoked.connect(self._on_revoked)
        self.table.on_recover(self._load_assigned)
        app.agent(self.source, name="citybrain.forecasts")(self.run)

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        await self.flush(force=True)
        self.owned.clear()  # reloaded from the table by whoever owns each partition next
        self.snapshots.forget()

    async def _load_assigned(self) -> None:
        """Once the tables are recovered, load every partition this worker now owns: where
        its snapshot ends is where the partition is read from (`commit_ceilings`)."""
        topic = self.source.get_topic_name()
        for tp in self.app.assignor.assigned_actives():
            if tp.topic == topic:
                self._owned(tp.partition)

    def _owned(self, partition: int) -> Warnings:
        state = self.owned.get(partition)
        if state is None:
            state, meta = self._load(partition)
            self.owned[partition] = state
            self.snapshots.loaded(partition, meta, time.monotonic())
        return state

    def _load(self, partition: int) -> tuple[Warnings, Snapshot | None]:
        raw = self.table.data.get(meta_key(partition))
        if raw is None:
            return self.step.new(), None
        meta = Snapshot.from_bytes(raw)
        try:
            state = self.step.load(snapshot_chunks(partition, meta, self.table.data.get))
        except ValueError as exc:
            # The forecasts relearn from here on; the city's alerts don't stop for them.
            log.error("early warning[%d]: stored state unusable (%s); learning anew", partition, exc)
            return self.step.new(), meta
        log.info("early warning[%d]: state through offset %d loaded", partition, state.offset)
        return state, meta

    async def run(self, stream: faust.StreamT) -> None:
        deadline = time.monotonic() + REGISTRY_WAIT_S
        while not self.feed.caught_up and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # without the ratings every warning would clear
        async for event in batches(self.app, stream):
            await self.process(event)

    async def process(self, event: EventT) -> None:
        partition = event.message.partition
        state = self._owned(partition)
        async with self.stepping:
            out = self.step.step(state, [Record(partition, r.offset, r.key, r.value) for r in event.value])
            await send_all(self.app, [(self.topics.alert_inputs, key, doc, None, None) for key, doc in out.detections]
                           + [(self.topics.forecasts, key, doc, None, None) for key, doc in out.forecasts])
            self.snapshots.applied(partition, now=time.monotonic())

    async def flush(self, force: bool = False) -> None:
        """Snapshot the partitions that moved on and are due (every one that moved, when
        `force`)."""
        await store_snapshots(self.table, self.snapshots, self.stepping, force,
                              lambda p, previous: chunk_writes(p, encode(self.owned[p]), self.owned[p].offset, previous))


def register(app: faust.App, settings: StreamSettings) -> None:
    """The forecast agent, with its own view of the registry (the ratings it warns by)."""
    registry = Registry.from_file(settings.registry_file) if settings.registry_file else Registry()
    try:
        step = EarlyWarning(settings.rule_book(), registry, settings.window_s * 1000,
                            ahead=settings.outlook == "on")
    except ValueError as exc:
        log.error("early warning off: %s", exc)
        return
    feed = TopicView(settings.bootstrap, settings.topics.registry, registry.apply)

    @app.task
    async def follow_registry_for_forecasts() -> None:
        await feed.start()

    ForecastAgent(app, settings, step, feed)
