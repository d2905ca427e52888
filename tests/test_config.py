"""Settings from CITYBRAIN_* variables and flags, with one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import ConfigError, Settings, load


def test_defaults_match_the_contract() -> None:
    s = load({})
    assert s.bootstrap == "127.0.0.1:9092" and s.embedded
    assert s.api_url == "http://127.0.0.1:8000"
    assert s.data_dir == Path("var") and s.topic_prefix == "citybrain."


def test_environment_variables_and_flags_flags_win() -> None:
    s = load({"CITYBRAIN_BROKER": "kafka-1:9092", "CITYBRAIN_API_PORT": "9000",
              "CITYBRAIN_TOPIC_PREFIX": "qd.", "CITYBRAIN_SIMULATE": "250"})
    assert (s.bootstrap, s.api_port, s.topics.events("grid"), s.simulate) == \
        ("kafka-1:9092", 9000, "qd.grid.events", 250.0)
    assert not s.embedded
    assert s.with_overrides(api_port=9100, broker=None).api_port == 9100


def test_settings_survive_the_trip_through_child_environments() -> None:
    s = Settings(broker="k:1", partitions=3, simulate=12.5, data_dir=Path("/tmp/x"))
    assert load(s.environ()) == s


@pytest.mark.parametrize("env, names", [
    ({"CITYBRAIN_API_PORT": "eighty"}, "CITYBRAIN_API_PORT='eighty' is not an integer"),
    ({"CITYBRAIN_API_PORT": "70000"}, "CITYBRAIN_API_PORT"),
    ({"CITYBRAIN_BROKER": "no port here"}, "CITYBRAIN_BROKER"),
    ({"CITYBRAIN_STORE": "redis"}, "CITYBRAIN_STORE"),
    ({"CITYBRAIN_PARTITIONS": "0"}, "CITYBRAIN_PARTITIONS"),
    ({"CITYBRAIN_TOPIC_PREFIX": "a b"}, "CITYBRAIN_TOPIC_PREFIX"),
    ({"CITYBRAIN_REGISTRY_FILE": "/nonexistent.json"}, "CITYBRAIN_REGISTRY_FILE"),
    ({"CITYBRAIN_WEBHOOK_URLS": "http://a/x, hooks.example/y"}, "CITYBRAIN_WEBHOOK_URLS"),
    ({"CITYBRAIN_ALERTMANAGER_URL": "alertmanager:9093"}, "CITYBRAIN_ALERTMANAGER_URL"),
    ({"CITYBRAIN_WEBHOOK_GROUP_INTERVAL_S": "0"}, "CITYBRAIN_WEBHOOK_GROUP_INTERVAL_S"),
    ({"CITYBRAIN_NOTIFIER_QUEUE_MAX": "0"}, "CITYBRAIN_NOTIFIER_QUEUE_MAX"),
    ({"CITYBRAIN_NOTIFIER_METRICS_PORT": "70000"}, "CITYBRAIN_NOTIFIER_METRICS_PORT"),
    ({"CITYBRAIN_TOPIC_RETENTION_SCALE": "2"}, "CITYBRAIN_TOPIC_RETENTION_SCALE"),
    ({"CITYBRAIN_TOPIC_RETENTION_SCALE": "0"}, "CITYBRAIN_TOPIC_RETENTION_SCALE"),
])
def test_bad_values_name_the_setting_in_one_line(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(env)
    assert names in str(err.value) and "\n" not in str(err.value)
