"""The workers' outlook: every device series' newest forecast 15, 30 and 60 minutes ahead,
read from the forecasts topic (streams/outlook.py writes it; issue 19).

Unlike the forecasts learnt on request from the window history (api/forecasts.py), these
are learnt online by the workers over every window they close, their state in the
workers' tables, so the API only looks them up: one device's at once, and the whole
city's, ranked, in one request.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple

import orjson

from streams.processor import iso


class Outlook(NamedTuple):
    """One series' newest forecast."""

    made_at: int  # ms: the end of the last step learnt
    learnt: int  # steps learnt
    step_ms: int
    coverage: float
    horizons_s: tuple[int, ...]
    mean: tuple[float | None, ...]
    low: tuple[float | None, ...]
    high: tuple[float | None, ...]

    def doc(self) -> dict[str, Any]:
        """As the routes answer it: per horizon the step it forecasts (the `step_ms` ending
        that long after `made_at`), its mean and interval (null until measured)."""
        return {"made_at": iso(self.made_at), "learnt": self.learnt, "step_ms": self.step_ms,
                "coverage": self.coverage,
                "points": [{"in_s": h, "start": iso(self.made_at + h * 1000 - self.step_ms),
                            "end": iso(self.made_at + h * 1000), "mean": m, "low": lo, "high": hi}
                           for h, m, lo, hi in zip(self.horizons_s, self.mean, self.low, self.high)]}


class Outlooks:
    """(domain, figure) → entity → its newest `Outlook`."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], dict[str, Outlook]] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """A forecasts record: a newer forecast replaces a series' older one (a series that
        moved partition may still have an older one under its old key)."""
        try:
            doc = orjson.loads(value or b"null")
            rows = zip(doc["figures"], doc["entities"], doc["made_at"], doc["learnt"], doc["mean"], doc["low"],
                       doc["high"])
            domain, step_ms, coverage, horizons = (doc["domain"], int(doc["step_ms"]), float(doc["coverage"]),
                                                   tuple(int(h) for h in doc["horizons_s"]))
            for figure, entity, made_at, learnt, mean, low, high in rows:
                of_figure = self.series.setdefault((domain, figure), {})
                held = of_figure.get(entity)
                if held is None or made_at >= held.made_at:
                    of_figure[entity] = Outlook(int(made_at), int(learnt), step_ms, coverage, horizons,
                                                _numbers(mean), _numbers(low), _numbers(high))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return  # the topic is the workers'; nothing else writes it

    def get(self, domain: str, figure: str, entity: str) -> Outlook | None:
        return self.series.get((domain, figure), {}).get(entity)

    def ranked(self, domain: str, figure: str, horizon_s: int, highest: bool) -> Iterator[tuple[str, Outlook]]:
        """Every series of a figure with a forecast at `horizon_s`, by that forecast's mean,
        highest (or lowest) first."""
        found = []
        for entity, o in self.series.get((domain, figure), {}).items():
            if horizon_s in o.horizons_s:
                m = o.mean[o.horizons_s.index(horizon_s)]
                if m is not None:
                    found.append((m, entity, o))
        found.sort(key=lambda t: (-t[0] if highest else t[0], t[1]))
        return ((entity, o) for _, entity, o in found)


def _numbers(xs: list[Any]) -> tuple[float | None, ...]:
    return tuple(float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None for x in xs)
