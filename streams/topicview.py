"""Tail a topic from its beginning into memory: the read side of the compacted topics.

Every reader sees every partition (no consumer group), so any number of API replicas or
workers build the same view. `caught_up` says whether the view has read everything that
was in the topic when it last looked, which is what readiness means for a read model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.aiokafka_private import wait_for_topic
from streams.kafka_security import client_options
from streams.topics import FETCH_MAX_WAIT_MS, VIEW_FETCH_MAX_WAIT_MS

log = logging.getLogger(__name__)

Apply = Callable[[bytes | None, bytes | None], None]
ApplyAt = Callable[[bytes | None, bytes | None, int, int], None]  # … partition, offset


class TopicView:
    def __init__(self, bootstrap: str, topic: str, apply: Apply | None = None, *,
                 apply_at: ApplyAt | None = None, after_fetch: Callable[[], None] | None = None,
                 refresh_s: float = 2.0, fetch_max_wait_ms: int = VIEW_FETCH_MAX_WAIT_MS) -> None:
        """`apply` gets each record's key and value; `apply_at` also its partition and
        offset, for views that hand out resume positions; `after_fetch` is called once the
        records of a fetch are applied, for views that write in batches. Views on an
        alert's way to a person fetch with `FETCH_MAX_WAIT_MS` (streams/topics.py)."""
        self.bootstrap, self.topic = bootstrap, topic
        self._apply: ApplyAt = apply_at or (lambda k, v, p, o: apply(k, v))  # type: ignore[misc]
        self._after_fetch = after_fetch
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self.refresh_s = refresh_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._probed_at = 0.0
        self.caught_up = False
        self.reachable = False
        self.records = 0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **client_options(self.bootstrap), enable_auto_commit=False,
            auto_offset_reset="earliest", group_id=None, fetch_max_wait_ms=self._fetch_max_wait_ms)
        await self._consumer.start()
        await wait_for_topic(self._consumer, self.topic)
        parts = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run(), name=f"view:{self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _probe(self) -> None:
        """Is the broker answering? (Not its end offsets: see streams/watermarks.py.)"""
        assert self._consumer is not None
        try:
            await asyncio.wait_for(self._consumer.end_offsets(list(self._consumer.assignment())),
                                   self.refresh_s * 2)
            self.reachable = True
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            self.reachable = False
            log.warning("view %s: broker unreachable: %s", self.topic, exc)
        self._probed_at = time.monotonic()

    async def _behind(self) -> bool:
        """Behind the high watermark of the latest fetch response of any partition."""
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is None or await self._consumer.position(tp) < hw:
                return True
        return False

    async def _run(self) -> None:
        assert self._consumer is not None
        await self._probe()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                for r in records:
                    self._apply(r.key, r.value, r.partition, r.offset)
                self.records += len(records)
            if batches and self._after_fetch is not None:
                self._after_fetch()
            if time.monotonic() - self._probed_at > self.refresh_s:
                await self._probe()
            self.caught_up = self.reachable and not await self._behind()


async def read_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every record now in `topic`, as (key, value): a one-off read, the way views read."""
    records: list[tuple[bytes | None, bytes | None]] = []
    view = TopicView(bootstrap, topic, lambda k, v: records.append((k, v)), refresh_s=0.5,
                     fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    await view.start()
    try:
        async with asyncio.timeout(timeout_s):
            while not view.caught_up:
                await asyncio.sleep(0.05)
    finally:
        await view.stop()
    return records
