"""aiokafka's private parts for processes that run without Faust (the API's read models).

The one other adapter beside `streams/transport.py`, which cannot serve them: it loads
Faust, and the API process must not. `tests/test_private_api.py` checks each name used
here against the installed aiokafka.
"""

from __future__ import annotations

from typing import Optional

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def wait_for_topic(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Ask the brokers for `topic`'s metadata until one knows it. A starting aiokafka
    client asks for no topic's metadata; the embedded broker answers with every topic,
    Apache Kafka with none, and `partitions_for_topic` reads only that cache (Kafka's
    brokers learn of a new topic some milliseconds after it was created)."""
    await consumer._client._wait_on_metadata(topic)


def default_partition(producer: AIOKafkaProducer, topic: str, key: Optional[bytes], value: Optional[bytes]) -> int:
    """The partition the producer's own partitioner picks for a record, as `send` would
    (the topic's metadata must be known). Batches built by hand (streams/produce.py)
    land where single sends would."""
    return producer._partition(topic, None, None, None, key, value)
