"""Faust's aiokafka transport, corrected for two things that lose records.

Registered as the `citybrain://` broker scheme (pyproject entry point `faust.transports`).

1. End offsets: the embedded broker answers ListOffsets(latest) wrongly, so recovery
   would stop reading a changelog early (streams/watermarks.py).
2. Source partitions with no committed offset: after table recovery Faust seeks source
   partitions "to their committed offsets", which does nothing for a partition that has
   none. Records fetched while recovery was finishing were dropped by the conductor (it
   routes no partition until assignment completes), and the consumer's position had
   already moved past them, so a worker restarted before its group's first commit
   silently skipped them. Seeking such partitions to their beginning makes "no commit
   yet" mean what `auto_offset_reset=earliest` promises.
"""

from __future__ import annotations

from typing import List, Mapping

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from streams.watermarks import end_offsets


class ConsumerThread(driver.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: List[TP]) -> Mapping[TP, int]:
        bootstrap = ",".join(f"{u.host}:{u.port}" for u in self.app.conf.broker)
        return await end_offsets(bootstrap, partitions)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        never = [TopicPartition(tp.topic, tp.partition) for tp, offset in committed.items()
                 if not offset and tp.topic not in changelogs]
        if never:
            await consumer.seek_to_beginning(*never)
        return committed


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = Consumer
