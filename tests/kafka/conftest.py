"""The Kafka tier (`make test-kafka`): the same fixtures as the rest of the suite, on a
3-broker Apache Kafka cluster (KRaft, replication factor 3, min ISR 2) instead of the
embedded broker. Only `broker` differs; `settings`, `worker`, `api` ... are the suite's."""

from __future__ import annotations

from typing import Iterator

import pytest

from services.kafka_broker import KafkaCluster
from tests.conftest import free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster([(free_port(), free_port()) for _ in range(3)],
                           tmp_path_factory.mktemp("kafka")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def whole_cluster(broker: KafkaCluster) -> Iterator[None]:
    """Each test on the cluster starts on three running brokers, even if the one before
    failed between killing a node and starting it again (the TLS/SASL and retention
    modules bring brokers of their own)."""
    if isinstance(broker, KafkaCluster):
        broker.heal()
    yield
