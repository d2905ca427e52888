"""How early the forecaster sees a feeder's load ramp past its rating, and how often it
sees one that never comes.

    python -m benchmarks.forecast_ramps [--feeders N] [--noise X] [--trend-rate R] [--trend-damping D]

Feeders follow the simulator's daily load (services/simulator.py `grid_load`, 0.40 to
0.81 of rated, each scaled by 0.9 to 1.05) with Gaussian noise, one value a minute, and
a model at the worker's step (60 s, forecasts 60 steps ahead) learns five days of it.
From day three on, a feeder counts a false warning each time a forecast for the next
hour starts to pass its rating (the interval's low bound above 1.0, about 90 % sure, or
the mean with --bound mean). Then each feeder, from a copy of the five days' state,
ramps on day six, at a random minute, from its load to 1.2 x rated over 30 or 60
minutes; the lead is the minutes between the first warning and the load passing rated.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np

from services.simulator import grid_load
from streams.forecast import Config, Forecaster

STEP_MS = 60_000
DAY = 1440
LEARNT_DAYS = 5
CALM_FROM_DAY = 2  # false warnings are counted once the profile has two days
RAMPS_MIN = (30, 60)
PEAK = 1.2  # of rated, where a ramp ends


def normal_loads(feeders: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(feeders, minutes) of load as a fraction of rated, starting at local midnight."""
    hours = (np.arange((LEARNT_DAYS + 1) * DAY) / 60) % 24
    shape = np.array([grid_load(h) for h in hours])
    scale = rng.uniform(0.9, 1.05, feeders)[:, None]
    return shape[None, :] * scale * (1 + rng.normal(0, noise, (feeders, shape.size)))


def warns(model: Forecaster, slots: np.ndarray, bound: str) -> np.ndarray:
    return (getattr(model.forecast(slots, 60), bound) > 1.0).any(axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forecast_ramps", description=__doc__.split("\n")[0])
    parser.add_argument("--feeders", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.015, help="relative noise of a minute's load")
    parser.add_argument("--trend-rate", type=float, default=0.03)
    parser.add_argument("--trend-damping", type=float, default=0.97)
    parser.add_argument("--bound", choices=("low", "mean"), default="low")
    args = parser.parse_args(argv)
    config = Config(step_ms=STEP_MS, horizon=60, trend_rate=args.trend_rate, trend_damping=args.trend_damping)
    rng = np.random.default_rng(1)
    loads = normal_loads(args.feeders, args.noise, rng)
    slots = np.arange(args.feeders)

    model = Forecaster(config)
    false, warned = 0, np.zeros(args.feeders, bool)
    for minute in range(LEARNT_DAYS * DAY):
        model.learn(slots, np.full(args.feeders, minute * STEP_MS), loads[:, minute])
        if minute >= CALM_FROM_DAY * DAY:
            now = warns(model, slots, args.bound)
            false += int((now & ~warned).sum())
            warned = now
    feeder_hours = args.feeders * (LEARNT_DAYS - CALM_FROM_DAY) * 24
    print(f"trend {args.trend_rate}/{args.trend_damping}, noise {args.noise}, warning on the {args.bound}: "
          f"{false} false warnings in {feeder_hours:,} feeder-hours ({1000 * false / feeder_hours:.1f} per 1,000)")

    learnt = model.encode()
    for ramp in RAMPS_MIN:
        leads = []
        for f in range(args.feeders):
            start = LEARNT_DAYS * DAY + int(rng.integers(0, DAY - 240))
            y = loads[f].copy()
            y[start:start + ramp] = np.linspace(y[start], PEAK, ramp)
            y[start + ramp:] = PEAK
            passes = start + int(np.argmax(y[start:] > 1.0))
            one = Forecaster.decode(learnt)
            lead = 0
            for minute in range(LEARNT_DAYS * DAY, passes):
                one.learn(np.array([f]), np.array([minute * STEP_MS]), y[minute:minute + 1])
                if minute >= start and warns(one, np.array([f]), args.bound)[0]:
                    lead = passes - minute
                    break
            leads.append(lead)
        print(f"ramp to {PEAK} x rated over {ramp} min: lead median {np.median(leads):.1f} min, "
              f"least {min(leads)}, not warned before passing rated {sum(lead == 0 for lead in leads)} of {args.feeders}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
