"""How early `grid.overload_forecast` warns of a feeder's load ramp past its rating, and
how often it warns of one that never comes: the rule as the worker runs it.

    python -m benchmarks.forecast_ramps [--feeders N] [--noise X] [--raise-s S] [--coverage C]
        [--trend-rate R --trend-damping D]

Feeders follow the simulator's daily load (services/simulator.py `grid_load`, 0.40 to
0.81 of rated, each scaled by 0.9 to 1.05) with Gaussian noise, one closed window a
minute, through the rule's own step (streams/early_warning.py `EarlyWarning.observe`,
the worker's 60 s window, the catalogue's parameters but `raise_s`). Five normal days:
from day three on, every warning that fires is false. Then on day six each feeder
ramps, at a random minute, from its load to 1.2 x rated over 30 or 60 minutes; the lead
is the minutes from the warning (the time of its forecast) to the first window over
rated. An operator sees the warning one window lateness (`lateness_s`, 2 min by
default) after its forecast's time, and `grid.overload` about a minute after the load
passes rated, so the lead an operator gets is about the lead here minus 1 minute.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Sequence

import numpy as np

from services.simulator import grid_load
from streams.early_warning import WATCHES, EarlyWarning, Warnings, decode, encode, model_config
from streams.registry import Registry
from streams.rules import CATALOGUE, RuleBook

STEP_MS = 60_000
DAY = 1440
LEARNT_DAYS = 5
CALM_FROM_DAY = 2  # false warnings are counted once the model has a day's profile and trend
RAMPS_MIN = (30, 60)
PEAK = 1.2  # of rated, where a ramp ends
RULE = WATCHES["grid"].rule


def normal_loads(feeders: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(feeders, minutes) of load as a fraction of rated, starting at local midnight."""
    hours = (np.arange((LEARNT_DAYS + 1) * DAY) / 60) % 24
    shape = np.array([grid_load(h) for h in hours])
    scale = rng.uniform(0.9, 1.05, feeders)[:, None]
    return shape[None, :] * scale * (1 + rng.normal(0, noise, (feeders, shape.size)))


def warnings(rule: EarlyWarning, state: Warnings, loads: np.ndarray, minutes: range) -> list[tuple[int, int]]:
    """Walk the minutes; (feeder, time of its forecast in minutes) of every warning that fired."""
    entities = [f"F-{f:04d}" for f in range(len(loads))]
    return [(int(d.entity[2:]), d.ts // STEP_MS)
            for minute in minutes
            for d, _ in rule.observe(state, WATCHES["grid"], minute * STEP_MS, entities, loads[:, minute])
            if d.status == "firing" and d.seq == 1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forecast_ramps", description=__doc__.split("\n")[0])
    parser.add_argument("--feeders", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.015, help="relative noise of a minute's load")
    parser.add_argument("--raise-s", type=float, default=CATALOGUE[RULE].params["raise_s"],
                        help="how long the warning's condition must hold")
    parser.add_argument("--trend-rate", type=float, default=model_config(STEP_MS).trend_rate)
    parser.add_argument("--trend-damping", type=float, default=model_config(STEP_MS).trend_damping)
    parser.add_argument("--coverage", type=float, default=model_config(STEP_MS).coverage,
                        help="of the model's intervals: the warning is on their low bound")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    loads = normal_loads(args.feeders, args.noise, rng)
    registry = Registry({"id": f"F-{f:04d}", "domain": "grid", "rated_kw": 1.0} for f in range(args.feeders))
    book = RuleBook({RULE: {"raise_s": args.raise_s}})
    config = replace(model_config(STEP_MS), trend_rate=args.trend_rate, trend_damping=args.trend_damping,
                     coverage=args.coverage)
    rule = EarlyWarning(book, registry, STEP_MS, config)
    state = rule.new()
    warnings(rule, state, loads, range(CALM_FROM_DAY * DAY))
    false = len(warnings(rule, state, loads, range(CALM_FROM_DAY * DAY, LEARNT_DAYS * DAY)))
    feeder_hours = args.feeders * (LEARNT_DAYS - CALM_FROM_DAY) * 24
    print(f"trend {args.trend_rate}/{args.trend_damping}, coverage {args.coverage}, noise {args.noise}, "
          f"raise_s {args.raise_s:g}: "
          f"{false} false warnings in {feeder_hours:,} feeder-hours ({1000 * false / feeder_hours:.2f} per 1,000)")

    learnt = encode(state)
    for ramp in RAMPS_MIN:
        y = loads.copy()
        starts, passes = [], []
        for f in range(args.feeders):
            start = LEARNT_DAYS * DAY + int(rng.integers(0, DAY - 240))
            y[f, start:start + ramp] = np.linspace(y[f, start], PEAK, ramp)
            y[f, start + ramp:] = PEAK
            starts.append(start)
            passes.append(start + int(np.argmax(y[f, start:] > 1.0)))
        first: dict[int, int] = {}
        for f, minute in warnings(rule, decode(learnt), y, range(LEARNT_DAYS * DAY, (LEARNT_DAYS + 1) * DAY)):
            if minute >= starts[f]:  # one before the ramp began was a false warning, not this one
                first.setdefault(f, minute)
        # a warning once the load is over rated is no early warning: lead 0
        leads = [max(passes[f] - first[f], 0) if f in first else 0 for f in range(args.feeders)]
        print(f"ramp to {PEAK} x rated over {ramp} min: lead median {np.median(leads):.1f} min, "
              f"least {min(leads)}, not warned before passing rated {sum(lead == 0 for lead in leads)} "
              f"of {args.feeders}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
