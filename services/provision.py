"""Topic provisioning: create every topic the service uses before any client touches it.

Idempotent: existing topics are left alone, but one with fewer partitions than the
service expects is an error, because Faust's co-partitioning of a source topic with its
tables' changelogs would silently break.

Replication follows the cluster: three copies where there are three brokers or more, with
two in sync for a write to count (so one broker may fail or restart without losing or
refusing anything); one copy on a single broker, which is all it can hold.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from services.broker import BrokerError
from services.config import Settings
from streams.kafka_security import FailedConnections, client_options, unreachable
from streams.registry import Registry
from streams.topics import TopicSpec

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
MAX_REPLICAS = 3


async def connect_admin(bootstrap: str, timeout_s: float = 15.0) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=int(timeout_s * 1000))
    with FailedConnections() as failed:  # the person gets one line, with the reason
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
        except (KafkaConnectionError, KafkaError, asyncio.TimeoutError, OSError):
            await admin.close()
            raise BrokerError(unreachable(bootstrap, failed.reasons)) from None
    return admin


def replication(brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor and the topic configs that go with it, for a cluster this size."""
    factor = min(MAX_REPLICAS, brokers)
    return factor, ({"min.insync.replicas": str(factor - 1)} if factor >= MAX_REPLICAS else {})


async def broker_count(admin: AIOKafkaAdminClient, looks: int = 3, apart_s: float = 0.3) -> int:
    """The brokers the cluster has, as the most of `looks` answers: a broker answers from
    its own view of the cluster, which lags a broker just started or unfenced (the Kafka
    tier, 2026-11-30: one view of two brokers of three, and every topic got two replicas,
    too few to lose one and keep writing with min.insync.replicas 2). A lone broker is
    taken at its word: the embedded broker, `citybrain broker --engine kafka`."""
    seen = 0
    for look in range(looks):
        seen = max(seen, len((await admin.describe_cluster())["brokers"]))
        if seen >= MAX_REPLICAS or seen <= 1:
            break
        if look + 1 < looks:
            await asyncio.sleep(apart_s)
    return seen


async def partition_counts(admin: AIOKafkaAdminClient, names: list[str], looks: int = 20, apart_s: float = 0.5) -> dict[str, int]:
    """Each topic's partitions. A topic just created may be listed by one broker and not yet
    known to the one that describes it (0 partitions, on a Kafka cluster): such a topic is
    described again, up to `looks` times `apart_s` apart, before 0 is believed."""
    counts: dict[str, int] = {}
    for look in range(looks):
        described = await admin.describe_topics([n for n in names if not counts.get(n)])
        counts |= {d["topic"]: len(d["partitions"]) for d in described}
        if all(counts.get(n) for n in names) or look + 1 == looks:
            return counts
        await asyncio.sleep(apart_s)
    return counts


async def provision(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the missing topics; returns the names created."""
    admin = await connect_admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            factor, replicated = replication(await broker_count(admin))
            resp = await admin.create_topics(
                [NewTopic(s.name, s.partitions, factor, topic_configs={**s.config, **replicated})
                 for s in missing])
            for name, code, message in ((t[0], t[1], t[2]) for t in resp.topic_errors):
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise BrokerError(f"cannot create topic {name}: {message or f'error {code}'}")
        present = [s for s in specs if s.name in existing]
        if present:
            counts = await partition_counts(admin, [s.name for s in present])
            for s in present:
                if counts.get(s.name, 0) != s.partitions:
                    raise BrokerError(
                        f"topic {s.name} has {counts.get(s.name, 0)} partitions, expected "
                        f"{s.partitions}: grow it or set CITYBRAIN_PARTITIONS to match")
        return [s.name for s in missing]
    finally:
        await admin.close()


async def ensure_topics(settings: Settings) -> list[str]:
    return await provision(settings.bootstrap, settings.topics.specs())


async def publish_registry(settings: Settings) -> int:
    """Publish a registry file to the compacted registry topic, keyed by entity id."""
    assert settings.registry_file is not None
    registry = Registry.from_file(settings.registry_file)
    producer = AIOKafkaProducer(**client_options(settings.bootstrap), linger_ms=20)
    await producer.start()
    try:
        for entity in registry:
            await producer.send(settings.topics.registry, orjson.dumps(entity), key=entity["id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    return len(registry)
