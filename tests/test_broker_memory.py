"""`citybrain up`'s watch over the embedded broker's memory: warn once, then stop before
the machine runs out (the stack side is in tests/test_stack.py)."""

from __future__ import annotations

import pytest

from services.broker_memory import ADVICE, BrokerMemoryWatch, Limits, limits
from services.config import ConfigError, load


def test_by_default_it_stops_at_half_the_machines_memory_and_warns_at_two_thirds_of_that() -> None:
    assert limits(24_000) == Limits(warn_mb=8_000, stop_mb=12_000)
    assert limits(24_000, stop_mb=600) == Limits(warn_mb=400, stop_mb=600)
    assert limits(24_000, warn_mb=100) == Limits(warn_mb=100, stop_mb=12_000)
    assert limits(24_000, warn_mb=900, stop_mb=600) == Limits(warn_mb=600, stop_mb=600)  # never after the stop


def test_a_growing_broker_is_warned_about_once_with_the_time_left_then_stopped() -> None:
    watch = BrokerMemoryWatch(Limits(warn_mb=1_000, stop_mb=1_600))
    # +5 MB/s, sampled every 2 s: the warning at 1,000 MB, 600 MB (2 minutes) before the stop.
    verdicts = [(t, watch.sample(t, 500 + 5 * t)) for t in range(0, 240, 2)]
    said = [(t, v) for t, v in verdicts if v is not None]
    (t_warn, warn), (t_stop, stop) = said[0], said[1]
    assert (t_warn, warn.stop) == (100, False)
    assert "warning" in warn.line and "1,000 MB" in warn.line and "stops at 1,600 MB" in warn.line
    assert "in about 2 min" in warn.line and "+5.0 MB/s" in warn.line and ADVICE in warn.line
    assert (t_stop, stop.stop) == (220, True)
    assert "CITYBRAIN_BROKER_MEMORY_LIMIT_MB" in stop.line and ADVICE in stop.line
    assert "\n" not in warn.line + stop.line


def test_a_broker_already_past_the_limit_is_stopped_without_a_warning_first() -> None:
    verdict = BrokerMemoryWatch(Limits(warn_mb=1, stop_mb=2)).sample(0.0, 50.0)
    assert verdict is not None and verdict.stop


def test_a_steady_broker_below_the_limits_says_nothing() -> None:
    watch = BrokerMemoryWatch(limits(24_000))
    assert all(watch.sample(t, 300.0) is None for t in range(0, 3600, 5))


def test_the_limits_are_settings_and_must_be_positive() -> None:
    s = load({"CITYBRAIN_BROKER_MEMORY_WARN_MB": "512", "CITYBRAIN_BROKER_MEMORY_LIMIT_MB": "1024.5"})
    assert (s.broker_memory_warn_mb, s.broker_memory_limit_mb) == (512, 1024.5)
    with pytest.raises(ConfigError, match="CITYBRAIN_BROKER_MEMORY_LIMIT_MB"):
        load({"CITYBRAIN_BROKER_MEMORY_LIMIT_MB": "0"})
    with pytest.raises(ConfigError, match="not a number"):
        load({"CITYBRAIN_BROKER_MEMORY_WARN_MB": "lots"})
