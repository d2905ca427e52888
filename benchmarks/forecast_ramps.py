"""How early the early-warning rules warn of a ramp past the limit, and how often they
warn of one that never comes: the rules as the worker runs them.

    python -m benchmarks.forecast_ramps [--domain grid|traffic|gate] [--entities N] [--noise X] [--raise-s S]
        [--horizon-s S] [--coverage C] [--trend-rate R --trend-damping D] [--seed N]

Entities follow the simulator's daily shape (services/simulator.py): a feeder's load
(`grid_load`, 0.40 to 0.81 of rated, each feeder scaled by 0.9 to 1.05), or a road's
speed (free flow × (1 − 0.5 demand²), `traffic_demand`, clipped to 0.42..1.08 of free
flow), with Gaussian noise on each one-minute window's mean, or a gate's passes a minute
(`gate_activity`, peaking at 0.3 to 0.6 of a capacity of 30 a minute, Poisson counts,
its ramp counted the same way), through the rule's own step (streams/early_warning.py
`EarlyWarning.observe`, the worker's 60 s window, the catalogue's parameters but
`raise_s`, and on even where the catalogue has it off). Five normal days: from day three
on, every warning that fires is false. Then on day six each entity ramps, at a random minute, from
its value to 1.2 × rated (a road: to 0.15 × free flow; a gate: to 1.2 × capacity) over
30 or 60 minutes; the lead is the minutes from the warning (the time of its forecast) to
the first window past the limit (rated; 0.3 × free flow; for a gate, the first minute
whose rate of passes is past its capacity: a single minute's count passes it by chance
well before). An operator sees the
warning one window lateness
(`lateness_s`, 2 min by default) after its forecast's time, and `grid.overload` fires
about a minute after the load passes rated: the lead an operator gets is about the lead
here minus 1 minute.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Sequence

import numpy as np

from services.simulator import gate_activity, grid_load, traffic_demand
from streams.early_warning import WATCHES, EarlyWarning, Warnings, decode, encode, model_config
from streams.registry import Registry
from streams.rules import CATALOGUE, RuleBook

STEP_MS = 60_000
DAY = 1440
LEARNT_DAYS = 5
CALM_FROM_DAY = 2  # false warnings are counted once the model has a day's profile and trend
RAMPS_MIN = (30, 60)
# Per domain: the ramp's end (share of the rating), the registry entry of an entity, and
# the noise of a window's mean in the simulator: six feeder readings of 1.5 % a minute;
# one detector reading of 4 % a minute.
RAMP_TO = {"grid": 1.2, "traffic": 0.15, "gate": 1.2}
RATING = {"grid": {"rated_kw": 1.0}, "traffic": {"free_flow_kmh": 1.0}, "gate": {"capacity_per_min": 1.0}}
NOISE = {"grid": 0.015 / 6 ** 0.5, "traffic": 0.04, "gate": 0.0}  # a gate's noise is its counts'
GATE_CAPACITY = 30  # passes a minute: one lane of a face-recognition turnstile


def normal_days(domain: str, entities: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(entities, minutes) as a share of the rating, starting at local midnight."""
    hours = (np.arange((LEARNT_DAYS + 1) * DAY) / 60) % 24
    if domain == "grid":
        shape = np.array([grid_load(h) for h in hours])[None, :] * rng.uniform(0.9, 1.05, entities)[:, None]
        return shape * (1 + rng.normal(0, noise, (entities, hours.size)))
    if domain == "gate":
        shape = np.array([gate_activity(h) for h in hours])
        peak = rng.uniform(0.3, 0.6, entities)[:, None] * GATE_CAPACITY
        return rng.poisson(peak * shape[None, :] / shape.max()) / GATE_CAPACITY
    speed = 1 - 0.5 * np.array([traffic_demand(h) for h in hours]) ** 2
    return np.clip(speed[None, :] * (1 + rng.normal(0, noise, (entities, hours.size))), 0.42, 1.08)


def warnings(rule: EarlyWarning, state: Warnings, domain: str, values: np.ndarray,
             minutes: range) -> list[tuple[int, int]]:
    """Walk the minutes; (entity, time of its forecast in minutes) of every warning that fired."""
    names = [f"E-{i:04d}" for i in range(len(values))]
    return [(int(d.entity[2:]), d.ts // STEP_MS)
            for minute in minutes
            for d, _ in rule.observe(state, WATCHES[domain], minute * STEP_MS, names, values[:, minute])
            if d.status == "firing" and d.seq == 1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forecast_ramps", description=__doc__.split("\n")[0])
    parser.add_argument("--domain", choices=sorted(RAMP_TO), default="grid")
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--noise", type=float, help="relative noise of a window's mean (default: the simulator's)")
    parser.add_argument("--raise-s", type=float, help="how long the warning's condition must hold "
                        "(default: the catalogue's)")
    parser.add_argument("--horizon-s", type=float, help="how far ahead the rule looks (default: the catalogue's)")
    parser.add_argument("--coverage", type=float, help="of the model's intervals: the warning is on the "
                        "bound nearest the limit (default: the domain's model's, streams/early_warning.py MODELS)")
    parser.add_argument("--trend-rate", type=float, help="default: the domain's model's")
    parser.add_argument("--trend-damping", type=float, help="default: the domain's model's")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    watch = WATCHES[args.domain]
    params = CATALOGUE[watch.rule].params
    if args.domain == "gate" and args.noise is not None:
        parser.error("--noise: a gate's noise is its counts' (Poisson)")
    noise = NOISE[args.domain] if args.noise is None else args.noise
    hold = params["raise_s"] if args.raise_s is None else args.raise_s
    rng = np.random.default_rng(args.seed)
    values = normal_days(args.domain, args.entities, noise, rng)
    registry = Registry({"id": f"E-{i:04d}", "domain": args.domain, **RATING[args.domain]}
                        for i in range(args.entities))
    config = model_config(STEP_MS, watch.model)
    config = replace(config, **{k: v for k, v in (("trend_rate", args.trend_rate), ("coverage", args.coverage),
                                                   ("trend_damping", args.trend_damping)) if v is not None})
    horizon = {} if args.horizon_s is None else {"horizon_s": args.horizon_s}
    rule = EarlyWarning(RuleBook({watch.rule: {"raise_s": hold, "enabled": True, **horizon}}), registry, STEP_MS,
                        {watch.model: config})

    state = rule.new()
    warnings(rule, state, args.domain, values, range(CALM_FROM_DAY * DAY))
    false = len(warnings(rule, state, args.domain, values, range(CALM_FROM_DAY * DAY, LEARNT_DAYS * DAY)))
    hours = args.entities * (LEARNT_DAYS - CALM_FROM_DAY) * 24
    noise_text = "Poisson counts" if args.domain == "gate" else f"{noise:.4f}"
    print(f"{watch.rule}: trend {config.trend_rate}/{config.trend_damping}, coverage {config.coverage}, "
          f"noise {noise_text}, raise_s {hold:g}: {false} false warnings in {hours:,} entity-hours "
          f"({1000 * false / hours:.2f} per 1,000)")

    learnt = encode(state)
    sign = 1.0 if watch.above else -1.0
    for ramp in RAMPS_MIN:
        y = values.copy()
        starts, crosses = [], []
        for i in range(args.entities):
            start = LEARNT_DAYS * DAY + int(rng.integers(0, DAY - 240))
            y[i, start:start + ramp] = np.linspace(y[i, start], RAMP_TO[args.domain], ramp)
            y[i, start + ramp:] = RAMP_TO[args.domain]
            starts.append(start)
            # when the ramp passes the limit: for a gate, its rate of passes, not a minute's count
            crosses.append(start + int(np.argmax(sign * y[i, start:] > sign * params[watch.limit])))
            if args.domain == "gate":  # a crowd building up is counted like any other passes
                y[i, start:] = rng.poisson(y[i, start:] * GATE_CAPACITY) / GATE_CAPACITY
        first: dict[int, int] = {}
        for i, minute in warnings(rule, decode(learnt), args.domain, y, range(LEARNT_DAYS * DAY, (LEARNT_DAYS + 1) * DAY)):
            if minute >= starts[i]:  # one before the ramp began was a false warning, not this one
                first.setdefault(i, minute)
        # a warning once the value is past the limit is no early warning: lead 0
        leads = [max(crosses[i] - first[i], 0) if i in first else 0 for i in range(args.entities)]
        print(f"ramp to {RAMP_TO[args.domain]} x rating over {ramp} min: lead median {np.median(leads):.1f} min, "
              f"least {min(leads)}, not warned before crossing {sum(lead == 0 for lead in leads)} of {args.entities}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
