"""Broker writes per input: what the service makes the broker store for each event it reads.

Measured from the broker alone, so it holds for any engine: the end offsets of every
topic under a run's prefix before and after (records added), and those records read
back (bytes: key, value and headers as produced, before compression; the batch framing
is not counted, on either side). The input is the event topics; everything else under
the prefix is the service's writes: window figures, roll-up shares, vitals, dead
letters, alert inputs and alerts, and Faust's changelog topics (named after the prefix).
Offsets are the true high watermarks of streams/watermarks.py: the embedded broker's
ListOffsets answer is not.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.provision import connect_admin
from streams.kafka_security import client_options
from streams.watermarks import end_offsets

Offsets = dict[TopicPartition, int]


@dataclass
class Tally:
    """Records and bytes of one topic between two sets of offsets."""

    records: int = 0  # end offset deltas
    bytes: int = 0  # of the records read back
    read: int = 0  # records read back: fewer than `records` if some were compacted or deleted


async def offsets(bootstrap: str, prefix: str) -> Offsets:
    """End offset of every partition of every topic under `prefix`.

    The partitions come from a metadata answer naming the topics. Not from a consumer's
    `partitions_for_topic`: that reads the client's own metadata cache, which `topics()`
    does not fill; the embedded broker fills it anyway (it answers a starting client's
    request for no topics with all of them), Apache Kafka does not, so on Kafka every
    run measured nothing."""
    admin = await connect_admin(bootstrap)
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        # An empty list asks for no topics on Kafka but for all of them on the embedded broker.
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    return await end_offsets(bootstrap, [TopicPartition(d["topic"], p["partition"])
                                         for d in described for p in d["partitions"]])


async def tally(bootstrap: str, start: Mapping[TopicPartition, int], end: Offsets,
                timeout_s: float = 600.0) -> dict[str, Tally]:
    """Per topic, the records from `start` (0 for a partition it doesn't name: a topic
    created since) up to `end`, read back for their sizes."""
    out = {tp.topic: Tally() for tp in end}
    todo = {tp: (start.get(tp, 0), stop) for tp, stop in end.items() if stop > start.get(tp, 0)}
    for tp, (first, stop) in todo.items():
        out[tp.topic].records += stop - first
    if not todo:
        return out
    consumer = AIOKafkaConsumer(**client_options(bootstrap), group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, (first, _) in todo.items():
            consumer.seek(tp, first)
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError(f"records of {len(todo)} partitions not read back in {timeout_s:g}s")
            batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                t = out[tp.topic]
                for r in records:
                    if r.offset < todo[tp][1]:
                        t.read += 1
                        t.bytes += _size(r.serialized_key_size) + _size(r.serialized_value_size) + sum(
                            len(k.encode()) + len(v or b"") for k, v in r.headers)
            for tp in [tp for tp, (_, stop) in todo.items() if await consumer.position(tp) >= stop]:
                del todo[tp]
                consumer.pause(tp)
    finally:
        await consumer.stop()
    return out


def _size(serialized: int) -> int:
    return max(serialized, 0)  # -1 for a missing key or a tombstone


def per_input(tallies: Mapping[str, Tally], inputs: Iterable[str], input_events: int) -> dict[str, Any]:
    """Broker records per input event and bytes per input byte, the service's writes being
    every topic but the input ones; `input_events` counts the events in the input records
    (a batch record holds many). Per topic too, busiest first."""
    inputs = set(inputs)
    written = {t: v for t, v in tallies.items() if t not in inputs and v.records}
    read = Tally()
    for t in inputs & tallies.keys():
        read.records += tallies[t].records
        read.bytes += tallies[t].bytes
    records = sum(v.records for v in written.values())
    size = sum(v.bytes for v in written.values())
    return {
        "input_events": input_events, "input_records": read.records, "input_bytes": read.bytes,
        "written_records": records, "written_bytes": size,
        "not_read_back": sum(v.records - v.read for v in written.values()),
        "broker_records_per_event": round(records / input_events, 3) if input_events else None,
        "broker_bytes_per_input_byte": round(size / read.bytes, 3) if read.bytes else None,
        "topics": {t: {"records": v.records, "bytes": v.bytes}
                   for t, v in sorted(written.items(), key=lambda kv: -kv[1].bytes)},
    }


async def since(bootstrap: str, prefix: str, before: Offsets, inputs: Iterable[str],
                input_events: int | None = None) -> dict[str, Any]:
    """What was written under `prefix` after the `before` offsets, per input: `per_input`
    now. `input_events` defaults to one event per input record (single-event records)."""
    inputs = list(inputs)
    began = time.monotonic()
    tallies = await tally(bootstrap, before, await offsets(bootstrap, prefix))
    if input_events is None:
        input_events = sum(tallies[t].records for t in inputs if t in tallies)
    return per_input(tallies, inputs, input_events) | {"read_back_s": round(time.monotonic() - began, 1)}
