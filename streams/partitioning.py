"""The partition the Java client's murmur2 gives a key, as aiokafka and most Kafka producers do.

The worker keeps an entity's state wherever its events arrive (streams/processor.py), so
nothing in the stream path depends on this; the simulator and the benchmarks use it to
place and group records the way a murmur2-keying gateway would.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def partition_for(entity_id: str, partitions: int) -> int:
    return (murmur2(entity_id.encode()) & 0x7FFFFFFF) % partitions
