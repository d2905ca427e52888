"""The benchmark's broker-writes meter on Apache Kafka: the embedded tier's test, on the
cluster. (On Kafka it once found no topics at all: see benchmarks/broker_writes.py.)"""

from tests.test_broker_writes import test_writes_since_a_snapshot_are_counted_per_input_event_and_byte  # noqa: F401
