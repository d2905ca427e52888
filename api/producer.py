"""The API's Kafka producer: ingested events go where a gateway would put them, and
people's ack/resolve commands go to the alert-inputs topic."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import HTTPException

from streams.events import Event
from streams.kafka_security import client_options
from streams.topics import Topics


class EventProducer:
    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # aiokafka binds a producer to the running loop, so it is made here, not in __init__.
        # acks=all: a 202 promises the events survive the loss of their partition's leader.
        self._producer = AIOKafkaProducer(**client_options(self.bootstrap), linger_ms=5, acks="all")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send_events(self, domain: str, events: list[Event]) -> None:
        """Produce one record per event keyed by its entity id, and wait for the broker:
        202 means the events are in Kafka."""
        await self.send(self.topics.events(domain),
                        [(e["entity"].encode(), orjson.dumps({k: v for k, v in e.items() if k != "entity"}))
                         for e in events])

    async def send(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        """Produce (key, value) records and wait until the broker has them all."""
        assert self._producer is not None, "started in the app's lifespan"
        try:
            futures = [await self._producer.send(topic, value, key=key) for key, value in records]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise HTTPException(503, f"Kafka unavailable: {type(exc).__name__}") from None
