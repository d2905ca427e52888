"""Feeder rules: overload, voltage and frequency out of band, outage, statistical load.

The threshold rules are computed for the whole batch at once; only the load baseline
walks each feeder's readings in order. `grid.offline` is a silence rule, judged by the
engine against stream time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.detectors.blocks import expected, learn, new_baseline
from streams.detectors.engine import Batch, Condition, Params, param

RATE = 0.02  # baseline learning rate per reading (every 10 s): the last ~8 minutes
NOMINAL_KV = 10.0  # China's distribution voltage, for feeders the registry gives no rating


def conditions(batch: Batch, states: list[dict[str, Any]], params: list[Params],
               ratings: list[dict[str, Any]]) -> dict[str, Condition]:
    load, voltage, frequency = batch.col("load_kw"), batch.col("voltage_kv"), batch.col("frequency_hz")
    rated = batch.per_event([r.get("rated_kw") or np.nan for r in ratings])
    nominal = batch.per_event([r.get("nominal_kv") or NOMINAL_KV for r in ratings])

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
        "grid.load_anomaly": _load_anomaly(batch, states, params, load, out | overloaded),
    }


def _load_anomaly(batch: Batch, states: list[dict[str, Any]], params: list[Params], load: np.ndarray,
                  explained: np.ndarray) -> Condition:
    """Load far from this feeder's normal for the time of day, in either direction; readings
    another rule explains (an outage, an overload) are neither judged nor learnt."""
    bad = np.zeros(batch.n, bool)
    ok = np.zeros(batch.n, bool)
    normal = np.full(batch.n, np.nan)
    for i, group in enumerate(batch.groups):
        deviation = params[i]["grid.load_anomaly"]["deviation"]
        base = states[i].get("base") or new_baseline()
        for j in group.tolist():
            if explained[j] or np.isnan(load[j]):
                continue
            t = int(batch.ts[j])
            usual = expected(base, t)
            if usual is not None and usual > 0:
                off = abs(load[j] / usual - 1)
                bad[j], ok[j], normal[j] = off > deviation, off < 0.75 * deviation, usual
            if not bad[j]:
                spread = 0.5 * deviation * (usual or 0)
                learn(base, t, float(load[j]), RATE, *((usual - spread, usual + spread) if usual else ()))
        states[i]["base"] = base
    return Condition(bad, ok, load, normal, ~explained)
