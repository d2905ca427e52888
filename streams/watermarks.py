"""True end offsets (high watermarks) of partitions, on any Kafka-protocol broker.

The embedded broker (Tansu) answers ListOffsets(latest) with the base offset of a
partition's last record batch plus one, not its high watermark: after a 10-record batch
at offsets 20..29 it says 21, while fetch responses say 30. Faust decides that a table's
recovery is complete, and a read model that it has caught up, by comparing positions
with end offsets, so a wrong answer silently loses restored state. The high watermark
in a fetch response is right on every broker, so that is what these functions use.
"""

from __future__ import annotations

import asyncio
import time
from typing import Iterable, Mapping, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka_security import client_options


class _Partition(Protocol):
    topic: str
    partition: int


TP = TypeVar("TP", bound=_Partition)


async def end_offsets(bootstrap: str, partitions: Iterable[TP],
                      timeout_s: float = 10.0) -> dict[TP, int]:
    """End offset per partition; keys as given (aiokafka's or Faust's partition tuples)."""
    asked = {TopicPartition(p.topic, p.partition): p for p in partitions}
    tps = list(asked)
    if not tps:
        return {}
    probe = AIOKafkaConsumer(**client_options(bootstrap), group_id=None, enable_auto_commit=False)
    await probe.start()
    try:
        reported: Mapping[TopicPartition, int] = await probe.end_offsets(tps)
        probe.assign(tps)
        for tp in tps:
            # The last batch starts at or before reported - 1; fetching there returns it
            # and, with it, the partition's real high watermark.
            probe.seek(tp, max(reported[tp] - 1, 0))
        deadline = time.monotonic() + timeout_s
        found: dict[TopicPartition, int] = {}
        while len(found) < len(tps) and time.monotonic() < deadline:
            await probe.getmany(*[tp for tp in tps if tp not in found], timeout_ms=200)
            for tp in tps:
                hw = probe.highwater(tp)
                if hw is not None:
                    found[tp] = hw
        if len(found) < len(tps):
            raise asyncio.TimeoutError(f"no fetch answer for {len(tps) - len(found)} partitions")
        return {asked[tp]: max(found[tp], reported[tp]) for tp in tps}
    finally:
        await probe.stop()


async def log_start(bootstrap: str, topic: str, partition: int) -> int:
    """The partition's first offset still in the log (after retention deleted older ones)."""
    tp = TopicPartition(topic, partition)
    probe = AIOKafkaConsumer(**client_options(bootstrap), group_id=None, enable_auto_commit=False)
    await probe.start()
    try:
        return (await probe.beginning_offsets([tp]))[tp]
    finally:
        await probe.stop()


async def uncommitted(bootstrap: str, group: str, partitions: Iterable[TopicPartition]) -> int:
    """Records past a consumer group's committed offsets (all of a partition it never
    committed): what the group would read again after a restart."""
    parts = list(partitions)
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=parts)
    finally:
        await admin.close()
    ends = await end_offsets(bootstrap, parts)
    return sum(end - max(committed[tp].offset, 0) if tp in committed else end for tp, end in ends.items())
