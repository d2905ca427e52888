"""The benchmark's broker-writes meter counts, from the broker, what a run wrote per input.
The same test runs on Apache Kafka in the Kafka tier (tests/kafka/test_bench_broker_writes.py)."""

from __future__ import annotations

import asyncio

from benchmarks import broker_writes
from services.config import Settings
from services.provision import provision
from streams.topics import TopicSpec
from tests.conftest import produce


def test_writes_since_a_snapshot_are_counted_per_input_event_and_byte(settings: Settings) -> None:
    t = settings.topics
    produce(settings, t.events("gate"), [(b"G-1", b"x" * 90)] * 3)  # before: not this run's
    before = asyncio.run(broker_writes.offsets(settings.bootstrap, settings.topic_prefix))

    produce(settings, t.events("gate"), [(b"G-1", b"e" * 97)] * 10)  # 10 input events, 1,000 bytes
    produce(settings, t.aggregates, [(b"k" * 10, b"v" * 140)] * 20)  # 3,000 bytes
    produce(settings, t.vitals, [(b"gate/0", None)] * 5)  # tombstones: their keys only, 30 bytes
    # Created after the first snapshot (Apache Kafka creates no topic on a first write).
    asyncio.run(provision(settings.bootstrap, [TopicSpec(t.changelog("late"), 1),
                                               TopicSpec("elsewhere.aggregates", 1)]))
    produce(settings, t.changelog("late"), [(b"s", b"v" * 9)] * 7)  # a topic created since: 70 bytes
    produce(settings, "elsewhere.aggregates", [(b"k", b"v")] * 4)  # another prefix: not counted
    after = asyncio.run(broker_writes.offsets(settings.bootstrap, settings.topic_prefix))

    tallies = asyncio.run(broker_writes.tally(settings.bootstrap, before, after))
    r = broker_writes.per_input(tallies, [t.events(d) for d in ("gate", "traffic", "grid")], input_events=10)
    assert (r["input_records"], r["input_bytes"]) == (10, 1000)
    assert (r["written_records"], r["written_bytes"], r["not_read_back"]) == (32, 3100, 0)
    assert r["broker_records_per_event"] == 3.2
    assert r["broker_bytes_per_input_byte"] == 3.1
    assert list(r["topics"]) == [t.aggregates, t.changelog("late"), t.vitals]
    assert r["topics"][t.vitals] == {"records": 5, "bytes": 30}


def test_a_run_that_wrote_nothing_has_no_ratio_rather_than_a_division_by_zero() -> None:
    r = broker_writes.per_input({}, ["in"], input_events=0)
    assert r["broker_records_per_event"] is None and r["broker_bytes_per_input_byte"] is None
