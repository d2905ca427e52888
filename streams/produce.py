"""Producing many records at once: one record batch per topic partition.

aiokafka's per-record `send` gives each record its own future and its own trip through
the producer's accumulator; profiled in a worker under `make bench`, that path was a
quarter of the worker's time (13 % in creating futures alone: each asks for the running
loop, which is a getpid system call). A worker's outputs come in lists (a step's
outputs, a changelog flush, a second's live figures), so here each list is cut into
aiokafka `BatchBuilder`s, one per topic partition, each with one future.

Keyed records go to the partition aiokafka's default partitioner picks for the key, as
`send` would put them, so compacted topics keep one partition per key.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

from aiokafka import AIOKafkaProducer

from streams.aiokafka_private import default_partition

Output = tuple[str, bytes | None, bytes | None, int | None, Any]  # topic, key, value, partition, headers


async def send_all(producer: AIOKafkaProducer, records: Iterable[Output]) -> dict[tuple[str, int], int]:
    """Produce every record and wait until the broker has them all, in order per
    partition; the last offset written to each (topic, partition)."""
    batches: dict[tuple[str, int], Any] = {}
    sent: list[tuple[tuple[str, int], int, asyncio.Future]] = []
    known: set[str] = set()

    async def submit(tp: tuple[str, int]) -> None:
        batch = batches.pop(tp)
        batch.close()  # or the producer's own `send` may add records to it
        sent.append((tp, batch.record_count(), await producer.send_batch(batch, tp[0], partition=tp[1])))

    for topic, key, value, partition, headers in records:
        if partition is None:
            if topic not in known:
                await producer.partitions_for(topic)  # the partitioner needs the topic's metadata
                known.add(topic)
            partition = default_partition(producer, topic, key, value)
        tp = (topic, partition)
        batch = batches.get(tp)
        if batch is None or batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
            if batch is not None:
                await submit(tp)  # full
            # a new batch takes its first record whatever its size, as `send` would
            batch = batches[tp] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers or [])
    for tp in list(batches):
        await submit(tp)
    last: dict[tuple[str, int], int] = {}
    for tp, count, future in sent:
        meta = await future
        last[tp] = max(last.get(tp, -1), meta.offset + count - 1)
    return last
