"""Outputs produced as record batches (streams/produce.py): nothing lost or doubled, each
partition in order, and every keyed record on the partition a per-record send would
pick, which compacted topics (window figures, alerts) rely on."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.config import Settings
from streams.partitioning import partition_for
from streams.produce import send_all


async def _produce(settings: Settings, records: list) -> dict[tuple[str, int], int]:
    # small batches, so the records take several per partition
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, max_batch_size=16 * 1024)
    await producer.start()
    try:
        return await send_all(producer, records)
    finally:
        await producer.stop()


async def _read(settings: Settings, topic: str, count: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(settings.partitions)])
    got: list = []
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got += msgs
    finally:
        await consumer.stop()
    return got


def test_every_record_arrives_once_in_order_on_its_key_partition(settings: Settings) -> None:
    topic = settings.topics.aggregates
    keyed = [(topic, f"key-{i % 97}".encode(), orjson.dumps({"i": i, "pad": "x" * 200}), None, None)
             for i in range(3000)]
    placed = [(topic, None, orjson.dumps({"i": 3000 + i}), i % settings.partitions, [("origin", b"0:%d" % i)])
              for i in range(8)]
    big = [(topic, b"big", orjson.dumps({"i": 3008, "pad": "y" * 40_000}), None, None)]  # over a batch
    last = asyncio.run(_produce(settings, keyed + placed + big))
    got = asyncio.run(_read(settings, topic, 3009))

    assert sorted(orjson.loads(m.value)["i"] for m in got) == list(range(3009))
    per_partition = defaultdict(list)
    for m in got:
        per_partition[m.partition].append(orjson.loads(m.value)["i"])
        if m.key is not None:
            assert m.partition == partition_for(m.key.decode(), settings.partitions)
    assert all(ids == sorted(ids) for ids in per_partition.values())
    assert {m.partition: dict(m.headers)["origin"] for m in got if m.headers} == {
        i % settings.partitions: b"0:%d" % i for i in range(8)}
    assert last == {(topic, p): max(m.offset for m in got if m.partition == p) for p in per_partition}
