"""Road detector rules: congestion, incidents, sensor faults and statistical anomalies.

Detectors report once per interval, so each one's readings are judged in arrival order
against its own recent history, in rounds (every detector's k-th reading of the batch at
once, as columns of the rules' state): the usual speed and occupancy (for an incident, a
collapse *relative to the road*), the previous reading (a detector that repeats itself
exactly is stuck), and a seasonal baseline of volume. History learns only from readings
no rule objects to, so an hour-long jam doesn't become the road's normal.

`traffic.offline` is a silence rule, judged by the engine against stream time.
"""

from __future__ import annotations

import numpy as np

from streams.detectors.blocks import Baselines
from streams.detectors.engine import Batch, Condition, EntityParams
from streams.detectors.store import RuleState

RATE = 0.2  # learning rate per reading (one a minute): history of the last ~5 minutes
RULES = ("traffic.congestion", "traffic.incident", "traffic.sensor_fault", "traffic.anomaly")
RATINGS = ("free_flow_kmh",)  # the registry's figures the rules judge by
LIMITS = {"traffic.sensor_fault": ("max_speed_kmh", "max_volume_per_min", "repeats"),
          "traffic.incident": ("max_speed_kmh", "occupancy", "speed_drop"),
          "traffic.congestion": ("speed_ratio", "occupancy"),
          "traffic.anomaly": ("ratio", "min_excess")}  # the parameters the rules judge by


def conditions(batch: Batch, state: RuleState, params: EntityParams,
               ratings: dict[str, np.ndarray]) -> dict[str, Condition]:
    cols = {r: [np.zeros(batch.n, bool), np.zeros(batch.n, bool), np.full(batch.n, np.nan),
                np.full(batch.n, np.nan)] for r in RULES}
    volume, speed, occupancy = (batch.col(f) for f in ("volume", "speed_kmh", "occupancy"))
    per_minute = batch.col("volume") * 60 / batch.col("interval_s")
    free_flow = ratings["free_flow_kmh"]  # NaN: none
    limits = {(rule, name): params.column(rule, name) for rule, names in LIMITS.items() for name in names}
    history = History(state)
    for j in batch.rounds():
        e = batch.code[j]
        verdicts = history.judge(batch.rows[e], {k: v[e] for k, v in limits.items()}, free_flow[e],
                                 batch.ts[j], volume[j], speed[j], occupancy[j], per_minute[j])
        for rule, verdict in verdicts.items():
            for c, x in zip(cols[rule], verdict):
                c[j] = x
    return {r: Condition(*c) for r, c in cols.items()}


class History:
    """Each detector's recent history, as columns of the rules' state: the usual speed and
    occupancy (NaN until the first reading learnt), the last reading and how many times
    in a row it came again, and the seasonal baseline of volume."""

    def __init__(self, state: RuleState) -> None:
        self.speed = state.column("speed", np.float64, np.nan)
        self.occupancy = state.column("occupancy", np.float64, np.nan)
        self.last = state.column("last", np.float64, np.nan, 3)
        self.repeats = state.column("repeats", np.int32, 0)
        self.base = Baselines(state, "base")

    def judge(self, rows: np.ndarray, p: dict[tuple[str, str], np.ndarray], free_flow: np.ndarray,
              ts: np.ndarray, volume: np.ndarray, speed: np.ndarray, occupancy: np.ndarray,
              per_minute: np.ndarray) -> dict[str, tuple]:
        """One reading of each of these detectors (distinct rows): every rule's
        (raise, clear, value, threshold), and the history learnt from it."""
        usual_speed, usual_occupancy = self.speed[rows], self.occupancy[rows]
        reading = np.column_stack([volume, speed, occupancy])
        repeats = np.where((self.last[rows] == reading).all(axis=1), self.repeats[rows] + 1, 0)
        self.last[rows], self.repeats[rows] = reading, repeats

        impossible = ((speed > p["traffic.sensor_fault", "max_speed_kmh"])
                      | (per_minute > p["traffic.sensor_fault", "max_volume_per_min"]))
        fault = impossible | (repeats >= p["traffic.sensor_fault", "repeats"] - 1)

        standstill = (speed <= p["traffic.incident", "max_speed_kmh"]) & (occupancy >= p["traffic.incident", "occupancy"])
        incident = standstill & (speed <= p["traffic.incident", "speed_drop"] * usual_speed)  # False while NaN

        reference = np.where(np.isnan(free_flow), usual_speed, free_flow)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.isnan(reference) | (reference == 0), np.nan, speed / reference)
        at_ratio, at_occupancy = p["traffic.congestion", "speed_ratio"], p["traffic.congestion", "occupancy"]
        congested = ~standstill & ~fault & (ratio < at_ratio) & (occupancy >= at_occupancy)
        flowing = (ratio >= at_ratio + 0.1) | (occupancy < at_occupancy - 0.1)

        normal = self.base.expected(rows, ts)
        most = np.where(np.isnan(normal), np.inf, p["traffic.anomaly", "ratio"] * normal + p["traffic.anomaly", "min_excess"])
        unusual = ~fault & (volume >= most)

        calm = ~(fault | standstill | congested | unusual)
        learnt = rows[calm]
        self.base.learn(learnt, ts[calm], volume[calm], RATE, high=np.where(np.isnan(normal), np.inf, 1.5 * normal + 2)[calm])
        self.speed[learnt] = np.where(np.isnan(usual_speed), speed, usual_speed + RATE * (speed - usual_speed))[calm]
        self.occupancy[learnt] = np.where(np.isnan(usual_occupancy), occupancy,
                                          usual_occupancy + RATE * (occupancy - usual_occupancy))[calm]
        max_speed, most_repeats = p["traffic.sensor_fault", "max_speed_kmh"], p["traffic.sensor_fault", "repeats"]
        return {
            "traffic.sensor_fault": (fault, ~fault, np.where(impossible, speed, repeats + 1),
                                     np.where(impossible, max_speed, most_repeats)),
            "traffic.incident": (incident, ~standstill, speed, p["traffic.incident", "max_speed_kmh"]),
            "traffic.congestion": (congested, flowing, ratio, at_ratio),
            "traffic.anomaly": (unusual, volume < 0.8 * most, volume, most),
        }
