"""Building blocks the rules are made of: a condition held for a duration, and a baseline.

Both keep a small, fixed-size state per entity (a sustain state is a small dict, kept
only while it is not idle; a baseline is columns of the rules' state,
streams/detectors/store.py), update on event time only, and learn nothing from the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.detectors.store import RuleState

Transition = tuple[str, int, float, float, int, int]  # kind, ts, value, threshold, episode, seq


@dataclass(frozen=True)
class Timing:
    raise_ms: int  # the condition must hold this long before it fires
    clear_ms: int  # the clear condition must hold this long before it resolves
    repeat_ms: int  # while firing, re-report at most this often

    @classmethod
    def of(cls, params: dict[str, Any]) -> "Timing":
        return cls(int(params["raise_s"] * 1000), int(params["clear_s"] * 1000), int(params["repeat_s"] * 1000))


def idle() -> dict[str, Any]:
    return {"on": False, "bad": None, "ok": None, "episode": None, "seq": 0, "emitted": None}


def sustain(state: dict[str, Any], timing: Timing, ts: np.ndarray, bad: np.ndarray, ok: np.ndarray,
            value: np.ndarray, threshold: np.ndarray) -> list[Transition]:
    """Threshold-with-duration and hysteresis over one entity's events, in time order.

    Fires once `bad` has held for `raise_ms`, re-reports every `repeat_ms` while it still
    holds, and resolves once `ok` (a separate, stricter condition, so a value hovering at
    the threshold doesn't flap) has held for `clear_ms`. An episode is named by the event
    time it began, and each report of it carries the next sequence number: a replay of
    the same events reports the same (episode, seq), which is what makes alerts dedupe.
    """
    out: list[Transition] = []
    for t, b, k, v, th in zip(ts.tolist(), bad.tolist(), ok.tolist(), value.tolist(), threshold.tolist()):
        if not state["on"]:
            if not b:
                state["bad"] = None
                continue
            if state["bad"] is None:
                state["bad"] = t
            if t - state["bad"] >= timing.raise_ms:
                state.update(on=True, episode=state["bad"], seq=1, emitted=t, ok=None)
                out.append(("firing", t, v, th, state["episode"], 1))
            continue
        if k:
            if state["ok"] is None:
                state["ok"] = t
            if t - state["ok"] >= timing.clear_ms:
                state["seq"] += 1
                out.append(("resolved", t, v, th, state["episode"], state["seq"]))
                state.update(idle())  # a resolved episode leaves nothing behind
            continue
        state["ok"] = None
        if b and t - state["emitted"] >= timing.repeat_ms:
            state["seq"] += 1
            state["emitted"] = t
            out.append(("firing", t, v, th, state["episode"], state["seq"]))
    return out


def is_idle(state: dict[str, Any]) -> bool:
    return not state["on"] and state["bad"] is None



# ---------------------------------------------------------------- seasonal baseline

HOUR_MS = 3_600_000
SLOTS = 48  # hour of day × (weekday, weekend), local time
UTC_OFFSET_MS = 8 * HOUR_MS  # the cities are in China Standard Time, which has no DST
SLOT_READY = 3  # a slot speaks for its hour after this many days of it; before, the level does
LEVEL_READY = 3  # values the level needs before it speaks at all
SATURATED = 255  # counts stop here: only whether they reached the READY figures matters


def slot(ts: np.ndarray) -> np.ndarray:
    local = ts + UTC_OFFSET_MS
    weekend = (local // (24 * HOUR_MS) + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    return local // HOUR_MS % 24 + 24 * weekend


class Baselines:
    """A seasonal baseline per row of the rules' state: the recent level, a mean per hour
    slot and how many days each slot was entered; constant size per entity. Every call
    takes distinct rows (a round of the batch: each entity's k-th value)."""

    def __init__(self, state: RuleState, name: str) -> None:
        self.level = state.column(f"{name}/level", np.float64, np.nan)  # NaN: nothing learnt yet
        self.count = state.column(f"{name}/count", np.uint8, 0)  # values learnt
        self.mean = state.column(f"{name}/mean", np.float64, 0.0, SLOTS)
        self.visits = state.column(f"{name}/visits", np.uint8, 0, SLOTS)  # days each slot was entered
        self.last = state.column(f"{name}/last", np.int8, -1)  # the slot learnt last

    def expected(self, rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """What's normal at `ts`: that hour's mean once the hour has been seen on SLOT_READY
        days, else the recent level (which is all a freshly installed device has), else NaN."""
        s = slot(ts)
        level = np.where(self.count[rows] >= LEVEL_READY, self.level[rows], np.nan)
        return np.where(self.visits[rows, s] >= SLOT_READY, self.mean[rows, s], level)

    def learn(self, rows: np.ndarray, ts: np.ndarray, x: np.ndarray, rate: float,
              low: Any = -np.inf, high: Any = np.inf) -> None:
        """Move the level and this hour's slot towards `x`, clipped to [low, high] around
        what is normal so that the onset of an anomaly, before any rule objects to it,
        barely moves the baseline (callers skip values a rule objects to altogether)."""
        x = np.minimum(np.maximum(x, low), high)
        level = self.level[rows]
        self.level[rows] = np.where(np.isnan(level), x, level + rate * (x - level))
        self.count[rows] = np.minimum(self.count[rows], SATURATED - 1) + 1
        s = slot(ts)
        entering = self.last[rows] != s  # entering the hour again: one more day of it
        visits = self.visits[rows, s]
        visits = np.where(entering, np.minimum(visits, SATURATED - 1) + 1, visits)
        self.visits[rows, s] = visits
        self.last[rows] = s
        mean = self.mean[rows, s]
        self.mean[rows, s] = np.where(entering & (visits == 1), x, mean + rate * (x - mean))
