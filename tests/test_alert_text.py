"""Alert text people can trust: every rule's summary is formatted, at every severity and
in both states, and says threshold where it means the threshold."""

from __future__ import annotations

import pytest

from streams.detectors.engine import Detector
from streams.registry import Registry
from streams.rules import CATALOGUE, SEVERITIES, RuleBook

# What each rule's detection reports, as the detectors compute it: (value, threshold).
# For the rules that learn what is usual (crowd surge, traffic anomaly) the threshold
# is ratio × usual + excess: 2.5 × 12 + 6 = 36 passes, 2.0 × 20 + 8 = 48 vehicles.
DETECTED = {
    "gate.tailgating": (1.0, 1.0), "gate.fever": (38.9, 37.3), "gate.denied_burst": (7.0, 5.0),
    "gate.offline": (90.0, 90.0), "gate.crowd_surge": (41.0, 36.0), "gate.crowd_forecast": (1.08, 1.0),
    "traffic.congestion": (0.21, 0.3), "traffic.incident": (4.0, 10.0), "traffic.sensor_fault": (4.0, 3.0),
    "traffic.anomaly": (61.0, 48.0), "traffic.offline": (180.0, 180.0), "traffic.congestion_forecast": (0.22, 0.3),
    "grid.overload": (1.27, 1.0), "grid.voltage": (0.912, 0.93), "grid.frequency": (50.31, 50.2),
    "grid.outage": (0.0, 0.1), "grid.load_anomaly": (812.0, 455.0), "grid.offline": (60.0, 60.0),
    "grid.overload_forecast": (1.12, 1.0),
}


def summary(rule: str, severity: str, status: str) -> str:
    """The summary as the worker writes it: the detector's own formatting call."""
    domain = rule.partition(".")[0]
    book = RuleBook({rule: {"severity": severity}})
    detector = Detector(domain, lambda *a: {}, book, Registry())
    value, threshold = DETECTED[rule]
    params = detector.params("E-1")[rule]
    return detector._detection(rule, "E-1", params, (status, 0, value, threshold, 0, 1)).summary


def test_every_rule_has_a_value_for_its_summary() -> None:
    assert set(DETECTED) == set(CATALOGUE)


@pytest.mark.parametrize("rule", sorted(CATALOGUE))
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_every_summary_is_formatted(rule: str, severity: str, status: str) -> None:
    text = summary(rule, severity, status)
    assert "{" not in text and "}" not in text, text
    if "{value" in CATALOGUE[rule].summary:
        value = DETECTED[rule][0]
        shown = {f"{value:.0f}", f"{value:.1f}", f"{value:.2f}", f"{value:.3f}", f"{value:.0%}"}
        assert any(s in text for s in shown), (text, value)


def test_the_threshold_is_named_threshold_and_the_normal_normal() -> None:
    assert summary("gate.fever", "major", "firing") == "temperature 38.9 °C at the gate (threshold 37.3 °C)"
    assert summary("grid.overload", "major", "firing") == "load 127% of rated (threshold 100%)"
    surge = summary("gate.crowd_surge", "major", "firing")
    assert surge == "41 passes a minute; threshold 36 (2.5 × the usual for the hour + 6)"
    volume = summary("traffic.anomaly", "minor", "firing")
    assert volume == "volume 61; threshold 48 (2 × the usual for the time of day + 8)"
    # Where the detection's threshold is the learnt normal, it is called that.
    assert summary("grid.load_anomaly", "minor", "firing") == "load 812 kW, normal 455 kW"
