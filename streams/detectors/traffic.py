"""Road detector rules: congestion, incidents, sensor faults and statistical anomalies.

Detectors report once per interval, so each one's readings are walked in time order
against its own recent history: the usual speed and occupancy (for an incident, a
collapse *relative to the road*), the previous reading (a detector that repeats itself
exactly is stuck), and a seasonal baseline of volume. History learns only from readings
no rule objects to, so an hour-long jam doesn't become the road's normal.

`traffic.offline` is a silence rule, judged by the engine against stream time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.detectors.blocks import expected, learn, new_baseline
from streams.detectors.engine import Batch, Condition, Params

RATE = 0.2  # learning rate per reading (one a minute): history of the last ~5 minutes
RULES = ("traffic.congestion", "traffic.incident", "traffic.sensor_fault", "traffic.anomaly")


def conditions(batch: Batch, states: list[dict[str, Any]], params: list[Params],
               ratings: list[dict[str, Any]]) -> dict[str, Condition]:
    cols = {r: [np.zeros(batch.n, bool), np.zeros(batch.n, bool), np.full(batch.n, np.nan),
                np.full(batch.n, np.nan)] for r in RULES}
    # Plain floats: they go into the detector state, which is JSON.
    volume, speed, occupancy = (batch.col(f).tolist() for f in ("volume", "speed_kmh", "occupancy"))
    per_minute = (batch.col("volume") * 60 / batch.col("interval_s")).tolist()
    for i, group in enumerate(batch.groups):
        st, p = states[i], params[i]
        free_flow = ratings[i].get("free_flow_kmh")
        for j in group.tolist():
            verdicts = _reading(st, p, free_flow, int(batch.ts[j]), volume[j], speed[j], occupancy[j],
                                per_minute[j])
            for rule, (b, k, v, th) in verdicts.items():
                c = cols[rule]
                c[0][j], c[1][j], c[2][j], c[3][j] = b, k, v, th
    return {r: Condition(*c) for r, c in cols.items()}


def _reading(st: dict[str, Any], p: Params, free_flow: float | None, ts: int, volume: float,
             speed: float, occupancy: float, per_minute: float) -> dict[str, tuple]:
    usual_speed, usual_occupancy = st.get("speed"), st.get("occupancy")
    reading = [volume, speed, occupancy]
    repeats = st.get("repeats", 0) + 1 if st.get("last") == reading else 0
    st["last"], st["repeats"] = reading, repeats

    f = p["traffic.sensor_fault"]
    impossible = speed > f["max_speed_kmh"] or per_minute > f["max_volume_per_min"]
    fault = impossible or repeats >= f["repeats"] - 1

    inc = p["traffic.incident"]
    standstill = speed <= inc["max_speed_kmh"] and occupancy >= inc["occupancy"]
    incident = standstill and usual_speed is not None and speed <= inc["speed_drop"] * usual_speed

    con = p["traffic.congestion"]
    reference = free_flow or usual_speed
    ratio = speed / reference if reference else np.nan
    congested = (not standstill and not fault and ratio < con["speed_ratio"]
                 and occupancy >= con["occupancy"])
    flowing = ratio >= con["speed_ratio"] + 0.1 or occupancy < con["occupancy"] - 0.1

    an = p["traffic.anomaly"]
    base = st.get("base") or new_baseline()
    normal = expected(base, ts)
    most = an["ratio"] * normal + an["min_excess"] if normal is not None else np.inf
    unusual = not fault and volume >= most

    if not (fault or standstill or congested or unusual):
        learn(base, ts, volume, RATE, high=np.inf if normal is None else 1.5 * normal + 2)
        st["speed"] = speed if usual_speed is None else usual_speed + RATE * (speed - usual_speed)
        st["occupancy"] = (occupancy if usual_occupancy is None
                           else usual_occupancy + RATE * (occupancy - usual_occupancy))
    st["base"] = base
    return {
        "traffic.sensor_fault": (fault, not fault, speed if impossible else repeats + 1,
                                 f["max_speed_kmh"] if impossible else f["repeats"]),
        "traffic.incident": (incident, not standstill, speed, inc["max_speed_kmh"]),
        "traffic.congestion": (congested, flowing, ratio, con["speed_ratio"]),
        "traffic.anomaly": (unusual, volume < 0.8 * most, volume, most),
    }
