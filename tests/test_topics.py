"""Topic names and provisioning specs (CONTRACT §2)."""

from __future__ import annotations

import pytest

from aiokafka.partitioner import DefaultPartitioner
from streams.partitioning import partition_for
from streams.topics import Topics


def test_contract_topic_names_under_the_default_prefix() -> None:
    t = Topics()
    assert [t.events(d) for d in ("gate", "traffic", "grid")] == [
        "citybrain.gate.events", "citybrain.traffic.events", "citybrain.grid.events"]
    assert (t.registry, t.alerts, t.deadletter) == (
        "citybrain.registry", "citybrain.alerts", "citybrain.deadletter")
    with pytest.raises(ValueError):
        t.events("water")


def test_state_topics_are_compacted_and_changelogs_copartitioned() -> None:
    specs = {s.name: s for s in Topics("x.", 6).specs(("gate-state",))}
    for name in ("x.registry", "x.alerts", "x.vitals", "x.worker-gate-state-changelog"):
        assert specs[name].config["cleanup.policy"] == "compact"
    for name in ("x.gate.events", "x.deadletter", "x.aggregates", "x.rollups"):
        assert "delete" in specs[name].config.get("cleanup.policy", "delete")
        assert int(specs[name].config["retention.ms"]) > 0 and int(specs[name].config["retention.bytes"]) > 0
    assert specs["x.gate.events"].partitions == specs["x.worker-gate-state-changelog"].partitions == 6


def test_a_state_value_may_pass_kafkas_default_record_limit() -> None:
    """An incident state holds every open alert of its district: ~3,000 silent devices
    passed 1 MiB and stopped the worker on Kafka (written and read back at 3 MiB on a
    Kafka node, 2026-11-30)."""
    specs = {s.name: s for s in Topics("x.", 6).specs(("incidents-state",))}
    assert int(specs["x.worker-incidents-state-changelog"].config["max.message.bytes"]) == 16 << 20


def test_a_retention_scale_shrinks_sizes_and_times_but_no_segment_below_1_mib() -> None:
    full = {s.name: s.config for s in Topics("x.").specs()}
    small = {s.name: s.config for s in Topics("x.", retention_scale=2.0 ** -13).specs()}
    assert small["x.traffic.events"] == {"retention.ms": str(7 * 86_400_000 >> 13), "retention.bytes": str(1 << 20),
                                         "segment.bytes": str(1 << 20)}
    assert small["x.aggregates"]["retention.bytes"] == str(256 << 10)
    assert small["x.vitals"] == {"cleanup.policy": "compact", "segment.bytes": str(1 << 20),
                                 "segment.ms": str(round(86_400_000 / 8192))}
    assert full["x.traffic.events"]["retention.bytes"] == str(8 << 30)  # the default is unscaled
    assert small.keys() == full.keys()


def test_entity_partition_matches_the_kafka_default_partitioner() -> None:
    for eid in ("G-0001", "T-0420", "F-0999", "湛山社区-7"):
        assert partition_for(eid, 8) == DefaultPartitioner()(eid.encode(), list(range(8)), [])
