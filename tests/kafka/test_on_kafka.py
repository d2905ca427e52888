"""The stream engine on a 3-broker Apache Kafka cluster: the suite's own exactness, crash,
scale-out, alert lifecycle (ack, resolve, restart) and notifier-to-Alertmanager tests
(imported, so they run here on Kafka with this directory's `broker`),
and a broker fault the embedded broker can't stage: the leader of the busiest partitions
killed mid-stream and restarted."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from services.config import Settings
from services.kafka_broker import KafkaCluster, KafkaNode
from services.provision import ensure_topics
from tests.conftest import Api, Proc, child_env, free_port, produce, read_all, vitals_totals, wait_for
from tests.test_alerts import (  # noqa: F401
    stack, test_an_outage_becomes_one_alert_that_people_handle_and_that_survives_a_restart)
from tests.test_notifier import (  # noqa: F401
    alertmanager, notifier, receiver, test_alerts_reach_alertmanager_and_webhooks_then_resolve)
from tests.test_scale_out import test_two_workers_and_two_api_replicas_give_the_same_answers  # noqa: F401
from tests.test_stream_engine import (  # noqa: F401
    assert_windows_equal, expected, expected_alerts, generate, produce_all, published_alerts, records, windows_match,
    test_every_window_equals_the_reference_with_out_of_order_and_late_events,
    test_two_workers_share_partitions_and_stay_exact_when_one_leaves)
from tests.test_stream_engine import test_sigkill_mid_stream_several_times_loses_and_doubles_nothing as sigkills


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_five_worker_sigkills_mid_stream_lose_and_double_nothing(
        settings: Settings, start_worker: Callable[..., Proc], store: str) -> None:
    sigkills(settings, start_worker, store)


class Stream:
    """A produced stream of events and what an undisturbed run makes of it: the
    reference windows and the alerts, to hold a disturbed run against. With `held_back`,
    that share of each topic's records is produced only by `produce_rest()`, after the
    disturbance: a worker gets through 30,000 events within a second or two, so a fault
    staged after its first vitals could otherwise come after the end of the stream."""

    def __init__(self, settings: Settings, n: int, seed: int, held_back: float = 0.0) -> None:
        self.settings = settings
        events = generate(n, seed=seed, entities=200)
        self.ref, late = expected(events, settings.partitions)
        self.on_time = len(events) - late
        self.per_domain = records(events, 1, settings.partitions)
        self.alerts = expected_alerts(settings, self.per_domain)
        self.busiest = max(self.per_domain, key=lambda d: len(self.per_domain[d]))
        cut = {d: len(r) - int(len(r) * held_back) for d, r in self.per_domain.items()}
        produce_all(settings, {d: r[:cut[d]] for d, r in self.per_domain.items()})
        self.rest = {d: r[cut[d]:] for d, r in self.per_domain.items()}

    def produce_rest(self) -> None:
        produce_all(self.settings, self.rest)

    def applied(self) -> int:
        return sum(t["events"] for t in vitals_totals(self.settings).values())

    def assert_undisturbed(self) -> None:
        # Generous: on Kafka a restarted worker's partition now and then stalls in Faust
        # until the watchdog reads it again (streams/watchdog.py, STALL_S).
        try:
            wait_for(lambda: windows_match(self.settings, self.ref), timeout=240, every=1.0)
        finally:
            assert_windows_equal(self.settings, self.ref)  # which windows differ, and where
        assert self.applied() == self.on_time
        wait_for(lambda: published_alerts(self.settings) == self.alerts, timeout=120, every=1.0)


def committed_events(settings: Settings) -> int:
    async def ask() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(settings.topics.app_id)
        except GroupCoordinatorNotAvailableError:
            return 0  # no group yet: its coordinator is being set up
        finally:
            await admin.close()
        return sum(o.offset for tp, o in offsets.items() if tp.topic.endswith(".events") and o.offset > 0)

    return asyncio.run(ask())


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_sigkills_after_commits_lose_and_double_nothing(
        settings: Settings, start_worker: Callable[..., Proc], store: str) -> None:
    """On Kafka a worker reaches its first vitals within a second and the suite's SIGKILL
    test kills it then, before its first offset commit, so the next worker starts from
    scratch. Here a worker is killed only after the group committed more, so the next one
    recovers state from the changelogs and resumes from committed offsets (a worker gets
    through these 240,000 events in a few commit intervals, so there are one to three)."""
    stream = Stream(settings, 240_000, seed=11)
    kills, seen = 0, 0
    while kills < 3:
        w = start_worker(str(kills), CITYBRAIN_STORE=store)
        now = wait_for(lambda: (n := committed_events(settings)) > seen and n, timeout=60, every=0.05)
        if now >= sum(len(r) for r in stream.per_domain.values()):
            break
        w.kill()
        kills, seen = kills + 1, now
    assert kills >= 1
    start_worker("last", CITYBRAIN_STORE=store)
    stream.assert_undisturbed()


def leader_of(settings: Settings, topic: str, partition: int) -> int:
    async def ask() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return next(p["leader"] for p in described["partitions"] if p["partition"] == partition)

    return asyncio.run(ask())


def test_partition_leader_killed_mid_stream_and_restarted_changes_nothing(
        broker: KafkaCluster, settings: Settings, start_worker: Callable[..., Proc]) -> None:
    stream = Stream(settings, 30000, seed=41, held_back=0.5)
    start_worker()
    wait_for(lambda: stream.applied() > 0, timeout=60, every=0.1)
    node: KafkaNode = broker.nodes[leader_of(settings, settings.topics.events(stream.busiest), 0) - 1]
    node.kill()  # SIGKILL mid-stream: the worker's fetches, outputs and commits move to new leaders
    try:
        killed_at = stream.applied()
        stream.produce_rest()
        wait_for(lambda: stream.applied() > killed_at, timeout=60)  # the stream goes on with two brokers
    finally:
        node.start()
    stream.assert_undisturbed()


def test_partition_leader_frozen_for_30_s_mid_stream_changes_nothing(
        broker: KafkaCluster, settings: Settings, start_worker: Callable[..., Proc], api: Api) -> None:
    """SIGSTOP, not a crash: the broker holds its connections open and answers nothing;
    the cluster fences it and moves its leaders, clients time out their requests to it."""
    stream = Stream(settings, 20000, seed=61, held_back=0.5)
    start_worker()
    wait_for(lambda: stream.applied() > 0, timeout=60, every=0.1)
    node = broker.nodes[leader_of(settings, settings.topics.events(stream.busiest), 0) - 1]
    assert node.proc is not None
    node.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(30)
    finally:
        node.proc.send_signal(signal.SIGCONT)
    stream.produce_rest()
    stream.assert_undisturbed()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)


def test_citybrain_broker_engine_kafka_keeps_its_topics_across_a_restart(processes: None, tmp_path: Path) -> None:
    """`citybrain broker --engine kafka`: one KRaft node, durable under --data-dir."""
    port = free_port()
    s = Settings(broker=f"127.0.0.1:{port}", topic_prefix="d.", partitions=2, data_dir=tmp_path)
    argv = ["broker", "--engine", "kafka", "--broker-port", str(port), "--data-dir", str(tmp_path)]
    for run in range(2):
        node = Proc(argv, child_env(s), tmp_path / f"broker-{run}.log")
        try:
            wait_for(lambda: "listening" in node.output(), timeout=120)
            asyncio.run(ensure_topics(s))
            produce(s, s.topics.deadletter, [(None, orjson.dumps({"run": run}))])
            assert [v for _, v in read_all(s, s.topics.deadletter)] == [{"run": r} for r in range(run + 1)]
        finally:
            assert node.stop() == 0
    assert (tmp_path / "kafka" / "data" / "meta.properties").exists()


def test_whole_cluster_restarted_mid_stream_changes_nothing(
        broker: KafkaCluster, settings: Settings, start_worker: Callable[..., Proc], api: Api) -> None:
    """Every broker stopped mid-stream and started again: the worker and the API wait for
    it, the API says 503 on /readyz meanwhile, and nothing is lost or counted twice."""
    stream = Stream(settings, 20000, seed=51, held_back=0.5)
    start_worker()
    wait_for(lambda: stream.applied() > 0, timeout=60, every=0.1)
    broker.stop()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 503, timeout=30)
    broker.start()
    stream.produce_rest()
    stream.assert_undisturbed()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
