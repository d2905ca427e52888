"""The Faust shell of early warning (streams/early_warning.py), in the stream workers.

    domain agents ──closed windows──► citybrain.aggregates ──(forecast agent)──► citybrain.alert-inputs

The aggregates topic is co-partitioned with the events (its partition p holds the
windows of the events' partition p), so the group gives this agent's partition p to the
worker that owns the events' partition p. Per partition one `Warnings` state, stored in
the `forecast-state` table the way the domain agents store theirs (streams/state.py): as
chunks under `<p>/<buffer>/<i>`, then `<p>/meta` naming the buffer, two buffers taking
turns so a crash mid-write leaves the previous snapshot whole. A batch that learnt a
window rewrites the snapshot before the offset commit covers the batch; a batch of
other records (live figures, windows of domains nobody forecasts) changes nothing worth
storing, and a replay of it changes nothing either. Detections are sent before the
snapshot that covers them is stored: after a crash they are sent again, with the same
(episode, seq), which the alert agent ignores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import EventT

from streams.agents import REGISTRY_WAIT_S, send_all, state_table, write
from streams.early_warning import EarlyWarning, Warnings, decode, encode
from streams.processor import Record
from streams.registry import Registry
from streams.settings import StreamSettings
from streams.state import Snapshot, chunk_key, meta_key
from streams.topics import FORECAST_TABLE
from streams.topicview import TopicView
from streams.transport import batches, deliver_in_batches, flush_before_commit

log = logging.getLogger(__name__)


class ForecastAgent:
    def __init__(self, app: faust.App, settings: StreamSettings, step: EarlyWarning, feed: TopicView) -> None:
        self.app, self.topics, self.step, self.feed = app, settings.topics, step, feed
        self.table = state_table(app, settings, FORECAST_TABLE, raw=True)
        self.owned: dict[int, tuple[Warnings, Snapshot | None]] = {}
        flush_before_commit(app, self.table.flush)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.agent(deliver_in_batches(app, self.topics.aggregates), name="citybrain.forecasts")(self.run)

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        await self.table.flush()
        self.owned.clear()  # reloaded from the table by whoever owns each partition next

    def _owned(self, partition: int) -> tuple[Warnings, Snapshot | None]:
        held = self.owned.get(partition)
        if held is None:
            held = self.owned[partition] = self._load(partition)
        return held

    def _load(self, partition: int) -> tuple[Warnings, Snapshot | None]:
        raw = self.table.data.get(meta_key(partition))
        if raw is None:
            return self.step.new(), None
        meta = Snapshot.from_bytes(raw)
        try:
            chunks = [self.table.data[chunk_key(partition, meta.buffer, i)] for i in range(meta.chunks)]
            state = decode(chunks)
        except (KeyError, ValueError) as exc:
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
        state, previous = self._owned(partition)
        out = self.step.step(state, [Record(partition, r.offset, r.key, r.value) for r in event.value])
        await send_all(self.app, [(self.topics.alert_inputs, key, doc, None, None) for key, doc in out.detections])
        if out.learnt:
            chunks = encode(state)
            buffer = "b" if previous is not None and previous.buffer == "a" else "a"
            meta = Snapshot(buffer, len(chunks), state.offset, sum(map(len, chunks)))
            write(self.table, event, [*((chunk_key(partition, buffer, i), c) for i, c in enumerate(chunks)),
                                      (meta_key(partition), meta.to_bytes())])
            self.owned[partition] = (state, meta)


def register(app: faust.App, settings: StreamSettings) -> None:
    """The forecast agent, with its own view of the registry (the ratings it warns by)."""
    registry = Registry.from_file(settings.registry_file) if settings.registry_file else Registry()
    try:
        step = EarlyWarning(settings.rule_book(), registry, settings.window_s * 1000)
    except ValueError as exc:
        log.error("early warning off: %s", exc)
        return
    feed = TopicView(settings.bootstrap, settings.topics.registry, registry.apply)

    @app.task
    async def follow_registry_for_forecasts() -> None:
        await feed.start()

    ForecastAgent(app, settings, step, feed)
