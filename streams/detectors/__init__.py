"""Anomaly detection: the rule catalogue's conditions per domain, and the statistical detector."""

from streams.detectors import gate, grid, traffic
from streams.detectors.engine import Batch, Detection, Detector
from streams.detectors.statistical import SeasonalDetector
from streams.detectors.store import RuleState
from streams.registry import Registry
from streams.rules import RuleBook

DOMAINS = {"gate": gate, "traffic": traffic, "grid": grid}


def detector(domain: str, rules: RuleBook, registry: Registry) -> Detector:
    rules_of = DOMAINS[domain]
    return Detector(domain, rules_of.conditions, rules, registry, rules_of.RATINGS)


__all__ = ["Batch", "Detection", "Detector", "RuleState", "SeasonalDetector", "detector"]
