"""The workers' outlook: every device series' newest forecast 15, 30 and 60 minutes ahead,
read from the forecasts topic (streams/outlook.py writes it; issue 19).

Unlike the forecasts learnt on request from the window history (api/forecasts.py), these
are learnt online by the workers over every window they close, their state in the
workers' tables, so the API only looks them up: one device's at once, and the whole
city's, ranked, in one request.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, NamedTuple

import orjson

from streams.processor import iso


STALE_STEPS = 2  # a forecast this many steps older than its figure's newest is left out of rankings


class Published(NamedTuple):
    """One series' newest forecast, as the workers published it."""

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


class Ranking(NamedTuple):
    top: list[tuple[str, Published]]
    total: int  # series ranked
    stale: int  # series left out: their forecast is STALE_STEPS older than the newest


class Outlooks:
    """(domain, figure) → entity → its newest `Published` forecast, and the newest
    `made_at` of each (domain, figure)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], dict[str, Published]] = {}
        self.newest: dict[tuple[str, str], int] = {}

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
                    of_figure[entity] = Published(int(made_at), int(learnt), step_ms, coverage, horizons,
                                                  _numbers(mean), _numbers(low), _numbers(high))
                    self.newest[domain, figure] = max(self.newest.get((domain, figure), 0), int(made_at))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return  # the topic is the workers'; nothing else writes it

    def get(self, domain: str, figure: str, entity: str) -> Published | None:
        return self.series.get((domain, figure), {}).get(entity)

    def ranked(self, domain: str, figure: str, horizon_s: int, highest: bool, limit: int) -> Ranking:
        """The `limit` series of a figure whose forecast at `horizon_s` is highest (or
        lowest), of those with one that is not stale."""
        found, stale = [], 0
        newest = self.newest.get((domain, figure), 0)
        for entity, o in self.series.get((domain, figure), {}).items():
            if o.made_at < newest - STALE_STEPS * o.step_ms:
                stale += 1
            elif horizon_s in o.horizons_s and (m := o.mean[o.horizons_s.index(horizon_s)]) is not None:
                found.append((-m if highest else m, entity, o))
        return Ranking([(entity, o) for _, entity, o in heapq.nsmallest(limit, found)], len(found), stale)


def _numbers(xs: list[Any]) -> tuple[float | None, ...]:
    return tuple(float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None for x in xs)
