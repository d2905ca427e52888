"""Streaming anomaly detectors."""

from streams.detectors.statistical import SeasonalDetector

__all__ = ["SeasonalDetector"]
