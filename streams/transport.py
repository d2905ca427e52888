"""Faust's aiokafka transport: whole fetches as one message, the fixes below, and every
other use of a private Faust or aiokafka name in the workers.

Registered as the `citybrain://` broker scheme (pyproject entry point `faust.transports`).
This module is the one place that reaches into Faust's and aiokafka's private parts
(besides `streams/aiokafka_private.py`, for processes that run without Faust):
`tests/test_private_api.py` checks that each name used here still exists, with the
signature relied on, in the installed versions, so an upgrade that renames one fails
that test instead of losing records.

Batches. Faust hands an agent one record at a time: per record it builds a message, an
event, a future, routes it through the conductor and a channel queue, and acks it; here
that path reads 4-6k records/s while aiokafka's `getmany` reads ~470k/s. For topics
registered with `deliver_in_batches`, every partition's share of a fetch becomes ONE
Faust message whose value is the list of aiokafka records. Everything else stays Faust's:
the agent consumes its stream, acks the message after processing (the consumer's gap
tracking then commits past every offset in it), tables and rebalancing are unchanged.

1. End offsets: the embedded broker answers ListOffsets(latest) wrongly, so recovery
   would stop reading a changelog early (streams/watermarks.py).
2. Source partitions with no committed offset: after table recovery Faust seeks source
   partitions "to their committed offsets", which does nothing for a partition that has
   none. Records fetched while recovery was finishing were dropped by the conductor (it
   routes no partition until assignment completes), and the consumer's position had
   already moved past them, so a worker restarted before its group's first commit
   silently skipped them. Seeking such partitions to their beginning makes "no commit
   yet" mean what `auto_offset_reset=earliest` promises.

3. Commits that fall behind: when offsets jump between two messages, Faust notes the
   records in between as a gap that counts as acked, but its gap runs up to and
   including the new message's own offset, which is then acked a second time. The
   duplicate splits the list of acked offsets, each commit advances past one message
   only, and the list grows with the stream (robinhood/faust#625): in a 30-minute soak,
   934k processed records stayed uncommitted and the worker slowed down sorting them.
   With one message per fetch every message follows such a jump, so here the gap ends
   before the message.
4. Fetch wait: Faust asks for fetches that may wait 1,500 ms; see FETCH_MAX_WAIT_MS.
5. Commits after state: tables that write their changelog in batches (streams.agents.
   StateTable) register a flush with `flush_before_commit`, awaited between choosing the
   offsets to commit (records acked so far) and committing them; and a topic whose state
   is stored as snapshots registers its
   `commit_ceilings`: its partitions are committed at the offset the newest snapshot
   covers, never past it, so a restart replays what no snapshot holds yet.
6. Records that never reach the agent: Faust passes over records on their way (the rest
   of a fetch when a partition is paused; a restarted worker's first fetch of a
   partition), while its read offset moves on and the next offset gap counts them as
   processed. Every batched topic's agent takes its batches through `batches`, which
   holds back one that does not follow on from the last one taken and reads the
   partition again from there (`Consumer.follows_on`, streams/gaps.py); and a fetch whose
   rest was passed over is read again at once (`Consumer.getmany`), since no later batch
   may come to show the gap.
7. The partition watchdog's view (streams/watchdog.py): how far each partition that should
   be read has got, what Faust and aiokafka hold for one, and reading one again (from
   where its stored state ends, for a snapshotted topic; else from its commit). The
   private state of both libraries is read here and nowhere else.
8. For the agents and the worker process: table writes placed by partition
   (`acting_for`), the Kafka producer under Faust's (`kafka_producer`), and a `Worker`
   whose graceful stop has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import weakref
from contextlib import contextmanager
from typing import (Any, AsyncIterator, Awaitable, Callable, ContextManager, Iterator, List, Mapping, Optional, Set,
                    Tuple)

import faust
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from faust.exceptions import ProducerSendError
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, EventT

from streams.codecs import RECORDS
from streams.gaps import Gap, Verdict, judge
from streams.topics import FETCH_MAX_WAIT_MS
from streams.watermarks import end_offsets, log_start

log = logging.getLogger(__name__)


class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # Faust fixes it at 1,500 ms
        return consumer

    async def _highwaters(self, partitions: List[TP]) -> Mapping[TP, int]:
        return await end_offsets(self.consumer.bootstrap_servers(), partitions)

    def verify_event_path(self, now: float, tp: TP) -> None:
        # A table's changelog is read only while the table recovers; after that the worker
        # writes it and never reads on, which Faust's check (made for streams) takes for a
        # stalled stream once its end passes the position: on Kafka it logged a 15-line
        # error for every changelog partition at every check, 49,688 of them in a two-hour
        # soak (benchmarks/README.md, Soak).
        if tp.topic in self.app.tables.changelog_topics:
            return None
        # Faust's livelock check reads the partition's fetch position, which aiokafka
        # asserts is set. It is not while an offset reset waits for a leader (the watchdog
        # read a partition again while its leader was frozen, on Kafka), and the failed
        # assertion crashed the consumer, and the worker with it. Such a partition has no
        # progress to judge yet.
        assignment = _assignment(self._consumer)
        state = None if assignment is None else assignment.state_value(TopicPartition(tp.topic, tp.partition))
        if state is None or not state.has_valid_position:
            return None
        return super().verify_event_path(now, tp)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        positions, never = dict(committed), []
        starts: dict[TP, int] = {}
        for tp, offset in committed.items():
            state = _state_end(self.app, tp.topic, tp.partition)
            if tp.topic not in changelogs:
                starts[tp] = state if state is not None else max(offset or 0, 0)
            if state is not None and state != offset:
                # A snapshotted partition goes on from where its loaded state ends, not from
                # the group's commit: a departing owner's last commit can land after the new
                # owner loaded an older snapshot (the embedded broker takes commits from an
                # old generation), and reading on from it skipped the records between.
                consumer.seek(TopicPartition(tp.topic, tp.partition), state)
                positions[tp] = state or None  # Faust drops records below what it is told here
            elif state is None and not offset and tp.topic not in changelogs:
                never.append(TopicPartition(tp.topic, tp.partition))
        if never:
            await consumer.seek_to_beginning(*never)
        self.consumer.agents_next = starts
        return positions


_BATCHED: "weakref.WeakKeyDictionary[faust.App, Set[str]]" = weakref.WeakKeyDictionary()
_CEILINGS: "weakref.WeakKeyDictionary[faust.App, dict[str, Callable[[], Mapping[int, int]]]]" = (
    weakref.WeakKeyDictionary())
_BEFORE_COMMIT: "weakref.WeakKeyDictionary[faust.App, list[Callable[[], Awaitable[None]]]]" = (
    weakref.WeakKeyDictionary())


def flush_before_commit(app: faust.App, flush: Callable[[], Awaitable[None]]) -> None:
    """Have `flush` awaited before the app's consumer commits any offset."""
    _BEFORE_COMMIT.setdefault(app, []).append(flush)


def commit_ceilings(app: faust.App, topic: str, ceilings: Callable[[], Mapping[int, int]]) -> None:
    """Commit `topic`'s partitions at `ceilings()[partition]` (the next offset to read),
    whatever has been processed beyond it; and read a partition from there, not from the
    group's commit, when it is assigned or read again: its stored state says where it
    goes on."""
    _CEILINGS.setdefault(app, {})[topic] = ceilings


def _state_end(app: faust.App, topic: str, partition: int) -> Optional[int]:
    """For a topic registered with `commit_ceilings`: where the partition's stored state
    ends (0 without a snapshot). None for other topics."""
    ceilings = _CEILINGS.get(app, {}).get(topic)
    return None if ceilings is None else ceilings().get(partition, 0)


def deliver_in_batches(app: faust.App, topic: str) -> faust.TopicT:
    """The Faust topic whose messages each hold one partition's records of one fetch."""
    _BATCHED.setdefault(app, set()).add(topic)
    return app.topic(topic, key_serializer="raw", value_serializer=RECORDS)


async def batches(app: faust.App, stream: faust.StreamT) -> AsyncIterator[EventT]:
    """The events of a `deliver_in_batches` topic's stream, each following on from the one
    before in its partition: a batch after records that never reached the agent is held
    back while they are read again (`Consumer.follows_on`)."""
    async for event in stream.events():
        if await app.consumer.follows_on(event):
            yield event


def _as_one(records: list[ConsumerRecord]) -> ConsumerRecord:
    last = records[-1]
    return ConsumerRecord(last.topic, last.partition, last.offset, last.timestamp,
                          last.timestamp_type, None, records, None, 0,
                          sum(r.serialized_value_size for r in records), ())


class Consumer(driver.Consumer):
    _fetched: Mapping[TP, Tuple[int, int]] = {}  # the last fetch: first and last offset per partition (replaced, never changed)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Per assigned partition, the offset the next batch an agent takes must start at:
        # where the partition was sought to, then the offset after the last batch taken
        # (`follows_on`). Replaced whole on the consumer's thread at each assignment.
        self.agents_next: dict[TP, int] = {}
        self._gaps: dict[TP, Gap] = {}  # partitions whose missing records are being read again

    async def follows_on(self, event: Any) -> bool:
        """Whether a batch of a `deliver_in_batches` topic follows on from the batches an
        agent took before it (streams/gaps.py). Faust can pass over a fetch on its way to
        the agent (seen: a restarted worker's first fetch of a partition, while its read
        offset moved on), and the next batch's offset gap then counts the records between as
        processed. Such a batch is not taken: the partition is read again from the
        expected offset, unless the broker no longer has those records (retention) or
        reading again showed the same gap (records not there: compaction, transaction
        markers), and it is marked acked so Faust does not commit past what it misses."""
        tp, records = event.message.tp, event.value
        first, last = records[0].offset, records[-1].offset
        expected = self.agents_next.get(tp, first)
        verdict, gap = judge(self._gaps.get(tp), expected, first)
        if verdict in (Verdict.REREAD, Verdict.WAIT) and first <= await log_start(
                self.bootstrap_servers(), tp.topic, tp.partition):
            verdict, gap = Verdict.ACCEPT, None  # retention deleted them: nothing to wait for
        if gap is None:
            self._gaps.pop(tp, None)
        else:
            self._gaps[tp] = gap
        if verdict is Verdict.ACCEPT:
            log.warning("%s[%d]: offsets %d..%d are not in the topic: going on from %d",
                        tp.topic, tp.partition, expected, first - 1, first)
        elif verdict is Verdict.REREAD:
            log.warning("%s[%d]: offsets %d..%d were not delivered; reading them again",
                        tp.topic, tp.partition, expected, first - 1)
            await self.read_from(tp, expected)
        if verdict in (Verdict.REREAD, Verdict.WAIT):
            event.message.acked = True  # Faust's ack of it is a no-op: its records come again
            return False
        self.agents_next[tp] = max(expected, last + 1)
        return True

    def bootstrap_servers(self) -> str:
        return ",".join(f"{u.host}:{u.port}" for u in self.app.conf.broker)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        # The offsets are chosen before the state is flushed: a record acked by now has had
        # its state written (an agent writes before its message is acked), so the flush
        # stores that state before the commit covers the record; records acked while the
        # flush is on its way wait for the next commit. Chosen after the flush, they took
        # in records acked meanwhile whose state was still pending, and a SIGKILL before
        # the next flush lost that state (alerts missing updates after a crash).
        offsets = self._filter_committable_offsets(tps)
        for flush in _BEFORE_COMMIT.get(self.app, ()):
            await flush()
        offsets.update(self._ceiling_offsets())  # a ceiling moves only once its snapshot is stored
        if not offsets:
            return False
        try:
            await self._handle_attached(offsets)  # as Faust's own _commit_tps does
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        return await self._commit_offsets(offsets, start_new_transaction=start_new_transaction)

    def _filter_committable_offsets(self, tps: Any) -> dict:
        offsets = super()._filter_committable_offsets(tps)  # also drains the acked lists
        ceilings = _CEILINGS.get(self.app, {})
        return {tp: o for tp, o in offsets.items() if tp.topic not in ceilings}

    def _ceiling_offsets(self) -> dict:
        offsets, assigned = {}, self.assignment()
        for topic, ceiling in _CEILINGS.get(self.app, {}).items():
            for partition, offset in ceiling().items():
                tp = TP(topic, partition)
                if tp in assigned and self._should_commit(tp, offset):
                    offsets[tp] = offset
        return offsets

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # `offset_to` is the offset of the message that revealed the gap: it is acked itself
        await super()._add_gap(tp, offset_from, offset_to - 1)

    async def getmany(self, timeout: float) -> AsyncIterator[Tuple[TP, Any]]:
        # Faust passes over the rest of a fetch without a word when a partition stops being
        # active while the fetch is handed on (paused, e.g. for a table's recovery), and
        # aiokafka's position has already moved past those records: they were never read,
        # and the next record's offset gap counted them as acked. Such records are read
        # again here, from the offset after the last one handed on. (A rebalance needs
        # nothing: every partition is sought to where it starts, `_seek_to_committed`.)
        generation = self.app.consumer_generation_id
        handed: dict[TP, int] = {}
        async for tp, message in super().getmany(timeout):
            handed[tp] = message.offset
            yield tp, message
        fetched, self._fetched = self._fetched, {}
        if self.app.consumer_generation_id != generation or not self.flow_active:
            return
        for tp, (first, last) in fetched.items():
            if handed.get(tp, first - 1) < last:
                read = self._read_offset.get(tp)
                again = first if read is None else min(read + 1, first)
                log.warning("%s[%d]: Faust passed over offsets %d..%d of a fetch; reading them again from %d",
                            tp.topic, tp.partition, max(first, handed.get(tp, first - 1) + 1), last, again)
                await self._thread.call_thread(_seek, self._thread._ensure_consumer(),
                                               TopicPartition(tp.topic, tp.partition), again)

    async def _wait_next_records(self, timeout: float) -> Tuple[Optional[Any], Optional[Set[TP]]]:
        records, active = await super()._wait_next_records(timeout)
        self._fetched = {tp: (rs[0].offset, rs[-1].offset) for tp, rs in (records or {}).items() if rs}
        batched = _BATCHED.get(self.app)
        if records and batched:
            records = {tp: [_as_one(rs)] if tp.topic in batched and rs else rs
                       for tp, rs in records.items()}
        return records, active

    # ------------------------------------------------------------ for streams/watchdog.py

    def progress(self) -> dict[TP, Optional[int]]:
        """How far each partition that should be read now has got: while tables recover,
        the fetch position of the changelog partitions Faust reads; after, for every
        assigned source partition, the offset after the last record an agent took (a
        batched topic's, `follows_on`: so records Faust passed over at the end of a
        partition, with no later batch to show the gap, count as not read) or else Faust
        handed to its streams (None before the first), comparable with the partition's end
        offset. Not the committed offset: a partition whose state is snapshotted commits
        only at its snapshots (`commit_ceilings`), up to a minute apart while it is busy.
        Empty while the flow is stopped for a rebalance."""
        assignment = self._assignment_state()
        if assignment is None or not self.flow_active:
            return {}
        changelogs, recovering = self.app.tables.changelog_topics, self.app.in_recovery
        batched = _BATCHED.get(self.app, set())
        active = self._get_active_partitions()
        out: dict[TP, Optional[int]] = {}
        for ktp in assignment.tps:
            tp = TP(ktp.topic, ktp.partition)
            if recovering and tp in active:
                state = assignment.state_value(ktp)
                out[tp] = state.position if state.has_valid_position else None
            elif not recovering and tp.topic in batched:
                out[tp] = self.agents_next.get(tp)  # what an agent took, not what Faust read
            elif not recovering and tp.topic not in changelogs:
                last = self._read_offset.get(tp)  # the offset of the last record handed over
                out[tp] = None if last is None else last + 1
        return out

    def fetch_state(self, tp: TP) -> str:
        """What Faust and aiokafka hold for a partition, in one line, for a person to read."""
        assignment, consumer = self._assignment_state(), self._thread._consumer
        line = (f"faust: active={tp in self._get_active_partitions()} paused={tp in self._paused_partitions} "
                f"buffered={tp in self._buffered_partitions} flow={self.flow_active} "
                f"read={self._read_offset.get(tp)} committed={self._committed_offset.get(tp)} "
                f"acked={len(self._acked.get(tp, ()))} gaps={len(self._gap.get(tp, ()))}")
        ktp = TopicPartition(tp.topic, tp.partition)
        if assignment is None or consumer is None or ktp not in assignment.tps:
            return f"{line}; aiokafka: not assigned"
        state, fetcher = assignment.state_value(ktp), consumer._fetcher
        held = fetcher._records.get(ktp)
        return (f"{line}; aiokafka: paused={state.paused} position="
                f"{state.position if state.has_valid_position else None} reset={state.awaiting_reset} "
                f"highwater={consumer.highwater(ktp)} held={type(held).__name__ if held else None} "
                f"in_flight={sorted(fetcher._in_flight)}")

    async def refresh_leaders(self) -> None:
        """Ask the brokers who leads each partition now (`_refresh_leaders` says why)."""
        await self._thread.call_thread(_refresh_leaders, self._thread._ensure_consumer())

    async def restart_fetch(self, tp: TP) -> None:
        """Read a partition again as a new owner would, from where its snapshotted state
        ends or else from its committed offset: Faust's bookkeeping of it reset as on
        revocation, resumed, and aiokafka seeked there (which drops whatever it holds for it
        and wakes its fetcher)."""
        self.resume_partitions({tp})
        state = _state_end(self.app, tp.topic, tp.partition)
        if state is not None:
            await self.read_from(tp, state)
            return
        self._forget(tp)
        committed = await self._thread.call_thread(_seek_committed, self._thread._ensure_consumer(),
                                                   TopicPartition(tp.topic, tp.partition))
        if committed:
            self._committed_offset[tp] = self._read_offset[tp] = committed

    async def read_from(self, tp: TP, offset: int) -> None:
        """Read a partition again from `offset` (records Faust passed over): its
        bookkeeping reset and aiokafka seeked there."""
        self._forget(tp)
        self.agents_next[tp] = offset
        self._read_offset[tp] = offset  # Faust hands on records at or past it
        await self._thread.call_thread(_seek, self._thread._ensure_consumer(),
                                       TopicPartition(tp.topic, tp.partition), offset)

    def _forget(self, tp: TP) -> None:
        for held in (self._gap, self._acked, self._acked_index, self._read_offset):
            held.pop(tp, None)

    def _assignment_state(self) -> Any:
        return _assignment(self._thread._consumer)


def _assignment(consumer: Any) -> Any:
    """aiokafka's per-partition fetch state of a consumer's assignment (None before one)."""
    subscription = None if consumer is None else consumer._subscription.subscription
    return None if subscription is None else subscription.assignment


async def _refresh_leaders(consumer: Any) -> None:
    """On the consumer's thread: ask the brokers who leads each partition now. A fetch
    that a follower answers is no error to aiokafka (Kafka serves consumer fetches v11+
    at followers), so after a leader froze and thawed, a worker went on reading the old
    leader, a follower out of sync, at its 804 records for minutes while the partition
    held 1,575 (Kafka tier, 2026-11-30): nothing made aiokafka look again before
    its metadata aged (`consumer_metadata_max_age_ms`, streams/app.py)."""
    try:
        await asyncio.wait_for(consumer._client.force_metadata_update(), timeout=5.0)
    except asyncio.TimeoutError:
        pass  # the brokers are away: the partitions read again once they answer


async def _seek(consumer: Any, tp: TopicPartition, offset: int) -> None:
    """On the consumer's thread: seek `tp` to `offset`, if it is still assigned."""
    if tp in consumer.assignment():
        consumer.seek(tp, offset)


async def _seek_committed(consumer: Any, tp: TopicPartition) -> Optional[int]:
    """On the consumer's thread: seek `tp` to its committed offset, or its beginning."""
    committed = await consumer.committed(tp)
    if committed:
        consumer.seek(tp, committed)
    else:
        await consumer.seek_to_beginning(tp)
    return committed


class Transport(driver.Transport):
    Consumer = Consumer


# ------------------------------------------------------------ for the agents and the worker


class _At:
    """Stands for an event of one partition, for Faust stores that place a write by the
    current event's partition."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = type("Message", (), {"partition": partition})()


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    """Faust sends a table write to the changelog partition (and rocksdb bucket) of the
    event being processed; a batch spans partitions, so each write names its own."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def acting_for_partition(partition: int) -> ContextManager[None]:
    """`acting_for` an event of `partition`: for a write made outside of any event."""
    return acting_for(_At(partition))


def kafka_producer(app: faust.App) -> AIOKafkaProducer:
    """The aiokafka producer under the app's Faust producer, started if it is not yet."""
    return app.producer._ensure_producer()


# A graceful stop takes about two seconds; one that waits on a dead broker (it died with
# `citybrain up`) would retry for minutes and hold the process and its ports.
SHUTDOWN_GRACE_S = 15.0


class Worker(faust.Worker):
    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        timer = threading.Timer(SHUTDOWN_GRACE_S, self._give_up)
        timer.daemon = True
        timer.start()
        super()._schedule_shutdown(signal)

    @staticmethod
    def _give_up() -> None:
        log.error("graceful stop took over %gs; exiting", SHUTDOWN_GRACE_S)
        os._exit(1)
