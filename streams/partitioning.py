"""Which partition owns an entity: the Java client's murmur2, as every Kafka producer uses.

State for an entity lives with the partition its id hashes to, so a producer that keys
records by entity id (the contract's rule) lands each event where its state already is.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def partition_for(entity_id: str, partitions: int) -> int:
    return (murmur2(entity_id.encode()) & 0x7FFFFFFF) % partitions
