"""Building blocks the rules are made of: a condition held for a duration, and a baseline.

Both keep a small, fixed-size state per entity (a JSON-friendly dict or list that lives
in the worker's table), update on event time only, and learn nothing from the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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


def slot(ts: int) -> int:
    local = ts + UTC_OFFSET_MS
    weekend = (local // (24 * HOUR_MS) + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    return int(local // HOUR_MS % 24 + 24 * weekend)


LEVEL_READY = 3  # values the level needs before it speaks at all


def new_baseline() -> list:
    """[level, values learnt, slot means…, slot visits…, last slot]: constant size."""
    return [None, 0] + [0.0] * SLOTS + [0] * SLOTS + [None]


def expected(b: list, ts: int) -> float | None:
    """What's normal at `ts`: that hour's mean once the hour has been seen on SLOT_READY
    days, else the recent level (which is all a freshly installed device has), else None."""
    s = slot(ts)
    if b[2 + SLOTS + s] >= SLOT_READY:
        return b[2 + s]
    return b[0] if b[1] >= LEVEL_READY else None


def learn(b: list, ts: int, x: float, rate: float, low: float = -np.inf, high: float = np.inf) -> None:
    """Move the level and this hour's slot towards `x`, clipped to [low, high] around what
    is normal so that the onset of an anomaly, before any rule objects to it, barely moves
    the baseline (callers skip values a rule objects to altogether)."""
    x = min(max(x, low), high)
    b[0] = x if b[0] is None else b[0] + rate * (x - b[0])
    b[1] += 1
    s = slot(ts)
    if b[-1] != s:  # entering the hour again: one more day of it
        b[2 + SLOTS + s] += 1
        b[-1] = s
        if b[2 + SLOTS + s] == 1:
            b[2 + s] = x
            return
    b[2 + s] += rate * (x - b[2 + s])
