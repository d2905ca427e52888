"""Feeder rules: overload, voltage and frequency out of band, outage, statistical load.

The threshold rules are computed for the whole batch at once; only the load baseline
takes each feeder's readings in order, in rounds (every feeder's k-th reading at once). `grid.offline` is a silence rule, judged by the
engine against stream time.
"""

from __future__ import annotations

import numpy as np

from streams.detectors.blocks import Baselines
from streams.detectors.engine import Batch, Condition, EntityParams, param
from streams.detectors.store import RuleState

RATE = 0.02  # baseline learning rate per reading (every 10 s): the last ~8 minutes
NOMINAL_KV = 10.0  # China's distribution voltage, for feeders the registry gives no rating
RATINGS = ("rated_kw", "nominal_kv")  # the registry's figures the rules judge by


def conditions(batch: Batch, state: RuleState, params: EntityParams,
               ratings: dict[str, np.ndarray]) -> dict[str, Condition]:
    load, voltage, frequency = batch.col("load_kw"), batch.col("voltage_kv"), batch.col("frequency_hz")
    rated = ratings["rated_kw"][batch.code]
    nominal = np.where(np.isnan(ratings["nominal_kv"]), NOMINAL_KV, ratings["nominal_kv"])[batch.code]

    def p(rule: str, name: str) -> np.ndarray:
        return param(batch, params, rule, name)

    pu = voltage / nominal
    out = (batch.equals("breaker", "open") | (pu < p("grid.outage", "min_voltage_ratio")))
    live = ~out
    tolerance = p("grid.voltage", "tolerance")
    off_band = live & (np.abs(pu - 1) > tolerance)
    in_band = np.abs(pu - 1) <= p("grid.voltage", "clear_tolerance")
    hz = p("grid.frequency", "tolerance_hz")
    off_hz = live & (np.abs(frequency - 50) > hz)
    in_hz = np.abs(frequency - 50) <= 0.75 * hz
    ratio = load / rated  # NaN without a rating: the rule can't judge, so it stays quiet
    overload_at = p("grid.overload", "threshold")
    overloaded = ratio > overload_at
    return {
        "grid.outage": Condition(out, live, pu, p("grid.outage", "min_voltage_ratio")),
        "grid.voltage": Condition(off_band, in_band, pu, np.where(pu < 1, 1 - tolerance, 1 + tolerance)),
        "grid.frequency": Condition(off_hz, in_hz, frequency, np.where(frequency < 50, 50 - hz, 50 + hz)),
        "grid.overload": Condition(overloaded, ratio < p("grid.overload", "clear_ratio"), ratio, overload_at),
        "grid.load_anomaly": _load_anomaly(batch, state, params, load, out | overloaded),
    }


def _load_anomaly(batch: Batch, state: RuleState, params: EntityParams, load: np.ndarray,
                  explained: np.ndarray) -> Condition:
    """Load far from this feeder's normal for the time of day, in either direction; readings
    another rule explains (an outage, an overload) are neither judged nor learnt."""
    bad = np.zeros(batch.n, bool)
    ok = np.zeros(batch.n, bool)
    normal = np.full(batch.n, np.nan)
    deviation = params.column("grid.load_anomaly", "deviation")
    base = Baselines(state, "base")
    for j in batch.rounds():
        j = j[~explained[j] & ~np.isnan(load[j])]
        rows, d, x, t = batch.rows[batch.code[j]], deviation[batch.code[j]], load[j], batch.ts[j]
        usual = base.expected(rows, t)
        judged = usual > 0  # False while NaN
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.abs(x / usual - 1)
        bad[j], ok[j] = judged & (off > d), judged & (off < 0.75 * d)
        normal[j] = np.where(judged, usual, np.nan)
        spread = 0.5 * d * np.where(np.isnan(usual), 0, usual)
        clipped = ~np.isnan(usual) & (usual != 0)
        learn = ~bad[j]
        base.learn(rows[learn], t[learn], x[learn], RATE, np.where(clipped, usual - spread, -np.inf)[learn],
                   np.where(clipped, usual + spread, np.inf)[learn])
    return Condition(bad, ok, load, normal, ~explained)
