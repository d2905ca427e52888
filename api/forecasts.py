"""Forecasts of a device's or an area's figure, from its window history (issue 19).

The forecaster (streams/forecast.py: level, damped trend, daily profile, weekly
correction, intervals from its own errors) learns the series of one figure over the
closed windows the read model holds, in time order, and forecasts the next steps with
their prediction intervals. Computed on request from the stored history, so every API
replica answers alike and nothing is lost with a worker; the cost is learning the
series each time (a day of one-minute windows: 1,440 points, a few hundred ms).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streams.forecast import Config, Forecaster

COVERAGE = 0.8


def series(domain: str, windows: dict[int, dict[str, Any]], figure: str) -> tuple[np.ndarray, np.ndarray]:
    """(window starts, values) of `figure` over the closed windows, oldest first; windows
    without the figure (no readings of it) are left out. Raises KeyError for a figure
    the domain doesn't have."""
    starts, values = [], []
    for ws, w in sorted(windows.items()):
        if not w["closed"]:
            continue  # still filling: a partial window would read as a drop
        value = w["agg"].figures(domain)[figure]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            starts.append(ws)
            values.append(float(value))
    return np.asarray(starts, np.int64), np.asarray(values, np.float64)


def forecast(domain: str, windows: dict[int, dict[str, Any]], figure: str, window_ms: int,
             steps: int) -> dict[str, Any]:
    """The next `steps` windows' `figure` after the newest closed one, each with its 80 %
    interval, and the last `steps` windows learnt (`recent`), so that a chart can draw the
    series the forecast continues. The mean is null before anything was learnt; the
    interval is null at a horizon the model has not yet measured an error at (its width
    would be zero there, which reads as certainty)."""
    starts, values = series(domain, windows, figure)
    model = Forecaster(Config(step_ms=window_ms, horizon=steps, coverage=COVERAGE))
    if len(starts):
        model.learn(np.zeros(len(starts), np.int64), starts, values)
    ahead = model.forecast(np.zeros(1, np.int64), steps)
    return {"figure": figure, "step_ms": window_ms, "coverage": COVERAGE, "learnt": len(starts),
            "from": int(starts[0]) if len(starts) else None,
            "through": int(starts[-1]) if len(starts) else None,
            "recent": [{"start": int(s), "value": float(v)} for s, v in zip(starts[-steps:], values[-steps:])],
            "points": [{"start": int(step) * window_ms, "mean": _number(m),
                        "low": _number(lo) if hi > lo else None, "high": _number(hi) if hi > lo else None}
                       for step, m, lo, hi in zip(ahead.step[0], ahead.mean[0], ahead.low[0], ahead.high[0])]}


def _number(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)
