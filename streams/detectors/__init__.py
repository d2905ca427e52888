"""Anomaly detection: the rule catalogue's conditions per domain, and the statistical detector."""

from streams.detectors import gate, grid, traffic
from streams.detectors.engine import Batch, Detection, Detector
from streams.detectors.statistical import SeasonalDetector
from streams.detectors.store import RuleState
from streams.registry import Registry
from streams.rules import RuleBook

CONDITIONS = {"gate": gate.conditions, "traffic": traffic.conditions, "grid": grid.conditions}


def detector(domain: str, rules: RuleBook, registry: Registry) -> Detector:
    return Detector(domain, CONDITIONS[domain], rules, registry)


__all__ = ["Batch", "Detection", "Detector", "RuleState", "SeasonalDetector", "detector"]
