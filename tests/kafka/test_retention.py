"""Retention on a real Apache Kafka node: the topics as provisioning creates them, their
sizes and times scaled down (CITYBRAIN_TOPIC_RETENTION_SCALE) so that days of a city pass
in a minute. A worker and the API take in many times what the event topics keep; the
broker's disk stays bounded, old segments go, compacted topics keep each key's newest
value, and a worker and API started after retention deleted input they never read go on
from what is left."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.config import Settings
from services.kafka_broker import ONE_NODE, KafkaNode
from services.provision import ensure_topics
from streams.kafka_security import client_options
from streams.topics import TopicSpec
from streams.topicview import read_to_end
from tests.conftest import Api, Proc, free_port, produce, read_all, vitals_totals, wait_for
from tests.reference import assert_matches
from tests.test_stream_engine import T0, W, expected, published_windows, records

# 2^-13: events keep 1 MiB a partition, for 74 s; window figures 256 KiB or 21 s;
# compacted topics roll their segments every 10.5 s. Segments stay at 1 MiB, the
# smallest that holds any batch Kafka accepts (streams/topics.py). One second of the
# test is about two and a quarter hours of the city's.
SCALE = 2.0 ** -13
PARTITIONS = 2
SENSORS = 100
BATCH = 50  # events per record, as gateways send them
CHUNK = 5000  # events sent at once: 0.3 MiB a partition, well under what one keeps
MIB = 1 << 20


@pytest.fixture(scope="module")
def broker(processes: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaNode]:
    """One node that applies retention and compaction within a second or two, where
    Kafka's defaults first check 30 s after start, then every 5 minutes, clean every 15 s
    and delete a segment's files a minute after it left the log."""
    workdir = tmp_path_factory.mktemp("kafka-retention")
    node = KafkaNode(free_port(), workdir, controller_port=free_port(), config={
        **ONE_NODE, "log.initial.task.delay.ms": "0", "log.retention.check.interval.ms": "1000",
        "log.segment.delete.delay.ms": "500", "log.cleaner.backoff.ms": "1000"})
    node.start()
    yield node
    node.stop()


@pytest.fixture
def settings(broker: KafkaNode, tmp_path: Path) -> Settings:
    s = Settings(broker=broker.address, topic_prefix=f"r{uuid.uuid4().hex[:8]}.", partitions=PARTITIONS,
                 data_dir=tmp_path, session_timeout_s=2.0, max_batch=1000, topic_retention_scale=SCALE)
    asyncio.run(ensure_topics(s))
    return s


def traffic(start_ms: int, windows: int, per_window: int) -> list[dict[str, Any]]:
    """Detector readings in event-time order, `per_window` in each of `windows` minutes."""
    n = windows * per_window
    return [{"type": "traffic.flow", "sensor_id": f"T-{i % SENSORS:04d}", "interval_s": 60,
             "volume": i % 37, "speed_kmh": round(20 + (i * 7919 % 6000) / 100, 2), "occupancy": (i % 1000) / 1000,
             "ts": start_ms + i * windows * W // n} for i in range(n)]


class Disk:
    """The broker's log directories on disk (allocated blocks, as `du` counts), per
    topic, sampled twice a second while a test runs; the largest seen is kept."""

    def __init__(self, data: Path) -> None:
        self.data, self.peak, self.peak_total = data, defaultdict(int), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> dict[str, int]:
        sizes: dict[str, int] = defaultdict(int)
        for d in self.data.iterdir():
            if d.is_dir() and (m := re.fullmatch(r"(.+)-\d+", d.name)):
                sizes[m.group(1)] += sum(f.stat().st_blocks * 512 for f in d.iterdir() if f.is_file())
        return sizes

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                sizes = self.now()
            except FileNotFoundError:  # a segment deleted while it was measured
                continue
            for topic, size in sizes.items():
                self.peak[topic] = max(self.peak[topic], size)
            self.peak_total = max(self.peak_total, sum(sizes.values()))

    def __enter__(self) -> "Disk":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def offsets(settings: Settings, topic: str) -> list[tuple[int, int]]:
    """(log start, log end) of each partition."""
    async def ask() -> list[tuple[int, int]]:
        c = AIOKafkaConsumer(**client_options(settings.bootstrap))
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(spec_of(settings, topic).partitions)]
            starts, ends = await c.beginning_offsets(tps), await c.end_offsets(tps)
        finally:
            await c.stop()
        return [(starts[tp], ends[tp]) for tp in tps]

    return asyncio.run(ask())


def send_traffic(settings: Settings, events: list[dict[str, Any]]) -> int:
    """Produce the events in batch records; returns the bytes sent."""
    recs = records(events, BATCH, PARTITIONS)["traffic"]
    produce(settings, settings.topics.events("traffic"), recs)
    return sum(len(v) for _, v in recs)


def settled(settings: Settings, topic: str, past: list[int]) -> bool:
    """Whether retention deleted every partition's records up to `past` and is done: the
    log starts are the same over two retention checks."""
    starts = [start for start, _ in offsets(settings, topic)]
    if any(s <= p for s, p in zip(starts, past)):
        return False
    time.sleep(2.5)
    return starts == [start for start, _ in offsets(settings, topic)]


def raw(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return asyncio.run(read_to_end(settings.bootstrap, topic, 10.0))


def applied(settings: Settings) -> int:
    return vitals_totals(settings).get("traffic", {}).get("events", 0)


def spec_of(settings: Settings, topic: str) -> TopicSpec:
    return next(s for s in settings.topics.specs() if s.name == topic)


def test_disk_stays_bounded_and_a_restart_after_retention_reads_on_from_what_is_left(
        broker: KafkaNode, settings: Settings, start_worker: Callable[..., Proc],
        start_api: Callable[[], Api]) -> None:
    topic = settings.topics.events("traffic")
    kept = spec_of(settings, topic).config
    retention, segment = int(kept["retention.bytes"]), int(kept["segment.bytes"])
    produced = 0

    def send(events: list[dict[str, Any]]) -> None:
        nonlocal produced
        produced += send_traffic(settings, events)

    with Disk(broker.workdir / "data") as disk:
        # 1. A running worker and API take in 100 minutes of event time (six times what the
        # partitions keep) chunk by chunk, so the worker reads every record before
        # retention deletes it.
        worker, api = start_worker(), start_api()
        first = traffic(T0, 100, 1000)
        for i in range(0, len(first), CHUNK):
            send(first[i:i + CHUNK])
            wait_for(lambda: applied(settings) >= min(i + CHUNK, len(first)), timeout=60)
        assert applied(settings) == len(first)
        wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
        assert worker.stop() == 0
        api.proc.stop()

        # 2. Stopped, they miss 60 minutes more, arriving as steadily: more than a partition
        # keeps, so everything they read and the start of what they did not are deleted.
        second = traffic(T0 + 100 * W, 60, 1000)
        read_up_to = [end for _, end in offsets(settings, topic)]
        for i in range(0, len(second), CHUNK):
            send(second[i:i + CHUNK])
            time.sleep(1.0)
        wait_for(lambda: settled(settings, topic, read_up_to), timeout=30)
        left = [v for _, v in read_all(settings, topic)]
        kept_events = sum(len(doc["events"]) for doc in left)
        assert 0 < kept_events < len(second)

        # 3. Started again, they read on from what is left: one warning per partition that
        # the records before it are gone, then the recent windows exactly.
        worker, api = start_worker("again"), start_api()
        third = traffic(T0 + 160 * W, 8, 500)
        send(third)
        wait_for(lambda: applied(settings) >= len(first) + kept_events + len(third), timeout=90)
        ref, late = expected(third, PARTITIONS)
        assert late == 0
        wait_for(lambda: recent_windows_match(settings, ref, T0 + 160 * W), timeout=30, every=1.0)
        wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
        assert worker.proc.poll() is None, worker.output()[-3000:]
        gaps = re.findall(r"\.traffic\.events\[(\d+)\]: offsets \d+\.\.\d+ are not in the topic", worker.output())
        assert sorted(gaps) == [str(p) for p in range(PARTITIONS)], gaps

        # Compacted: the vitals (once a second per moving partition) and the traffic
        # table's changelog (a snapshot per commit) lose older records of a key...
        for compacted in (settings.topics.vitals, settings.topics.changelog("traffic-state")):
            written = sum(end for _, end in offsets(settings, compacted))
            left_now = wait_for(lambda: (r := raw(settings, compacted)) and 2 * len(r) <= written and r,
                                timeout=30, every=1.0)
            print(f"\n{compacted}: {len(left_now)} records kept of {written} written, "
                  f"{len(dict(left_now))} keys")
        # ... and keep its newest: every event counted once, from the restored state on.
        assert applied(settings) == len(first) + kept_events + len(third)

    # Bounded: each event partition holds its retention, the segment being written and
    # what arrived since the last check, and the whole directory far less than went in.
    assert disk.peak[topic] <= PARTITIONS * (retention + 2 * segment), dict(disk.peak)
    assert produced >= 6 * PARTITIONS * retention and 2 * disk.peak_total < produced
    # Window figures are written on as long as the worker runs, and their old segments go too.
    windowed = spec_of(settings, settings.topics.aggregates).config
    assert disk.peak[settings.topics.aggregates] <= PARTITIONS * (
        int(windowed["retention.bytes"]) + 2 * int(windowed["segment.bytes"])), dict(disk.peak)
    assert all(start > 0 for start, _ in offsets(settings, settings.topics.aggregates))
    report = {t.removeprefix(settings.topic_prefix): round(b / MIB, 2) for t, b in sorted(disk.peak.items())}
    print(f"\nproduced {produced / MIB:.1f} MiB of events; peak on disk {disk.peak_total / MIB:.1f} MiB "
          f"in all; per topic (MiB): {report}")
    print("(log start, end) offsets: events", offsets(settings, topic), "aggregates",
          offsets(settings, settings.topics.aggregates))


def test_a_worker_restarted_while_retention_deletes_its_input_catches_up_to_the_log_end(
        settings: Settings, start_worker: Callable[..., Proc]) -> None:
    """Events keep arriving while the worker is down and while it starts, so retention
    moves the log start on every second or two as it finds the gap and reads it again."""
    topic = settings.topics.events("traffic")
    worker = start_worker()
    send_traffic(settings, traffic(T0, 4, 1000))
    wait_for(lambda: applied(settings) == 4000, timeout=60)
    assert worker.stop() == 0

    flowing = threading.Event()
    flowing.set()

    def flow() -> None:  # a minute of event time every 0.3 s: 0.4 MiB/s a partition
        minute = 10
        while flowing.is_set():
            send_traffic(settings, traffic(T0 + minute * W, 1, 2000))
            minute += 1
            time.sleep(0.3)

    city = threading.Thread(target=flow)
    city.start()
    try:
        time.sleep(4)  # past what a partition keeps
        worker = start_worker("again")
        wait_for(lambda: "are not in the topic" in worker.output(), timeout=60)
        time.sleep(5)
    finally:
        flowing.clear()
        city.join()
    ends = [end - 1 for _, end in offsets(settings, topic)]

    def reached() -> list[int | None]:
        latest = dict(read_all(settings, settings.topics.vitals))
        return [(latest.get(f"traffic/{p}".encode()) or {}).get("offset") for p in range(PARTITIONS)]

    try:
        wait_for(lambda: reached() == ends, timeout=30, every=1.0)
    except AssertionError:
        raise AssertionError(f"the partitions' vitals stopped at offsets {reached()}; their logs end at {ends}") from None


def recent_windows_match(settings: Settings, ref: dict, since_ms: int) -> bool:
    got = {k: v for k, v in published_windows(settings).items() if k[2] >= since_ms}
    if got.keys() != ref.keys():
        return False
    try:
        for key, doc in ref.items():
            assert_matches(key[0], got[key]["agg"], doc)
    except AssertionError:
        return False
    return True
