"""Streaming statistical anomaly detector for many entities at once.

State + update + score in the style of River's detectors, but with the state of
every entity held in numpy arrays so the service can score a whole batch of
entities in one pass. Memory is constant per entity: a fixed-size state row and
one seasonal baseline per time-of-day slot, whatever the length of the stream.

The maths of one time step lives in a single function, `_step`, written against
a tiny namespace of operations (max, min, where, ...). Given numpy's versions it
advances many entities at once; given Python's builtins it advances one entity on
plain floats, which is what makes a single long series fast (a numpy call per
point costs more than the arithmetic it does). Both paths therefore compute the
same numbers, and the score of a point only ever depends on that entity's
earlier points and the point itself.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

# Global constants, chosen once for the whole NAB corpus (never per series).
SLOTS_PER_DAY = 288  # 5-minute time-of-day slots for the seasonal baseline
SLOT_MS = 86_400_000 // SLOTS_PER_DAY
A_LEVEL = 0.01  # EWMA rate of the global level and of both residual scales
A_SEASONAL = 0.2  # EWMA rate of a slot's baseline: a slot is seen once per day
A_FAST = 0.2  # EWMA rate of the recent residual: sustained shifts build up in it
A_SURPRISE = 0.001  # EWMA rate of the typical surprise, the per-entity yardstick
CLIP = 6.0  # residuals are clipped at CLIP scales before learning, so outliers barely move the baseline
SEASONAL_GAIN = 0.7  # use the seasonal baseline only if its error is this much below the global one
SHIFT_WEIGHT = 2.0  # a sustained shift counts double: it is rarer than a one-off spike of equal size
Z_MIN = 4.0  # below this many scales a residual is never an anomaly, however quiet the entity
SURPRISE_RATIO = 8.0  # score 0.5 when a residual is this many times the entity's typical surprise
NEW_RANGE_MARGIN = 0.01  # a value beyond the range seen so far by this fraction of it is novel ...
NEW_RANGE_SCORE = 0.99  # ... and scores this, as a new extreme is the strongest single signal
FIRE = 0.6  # a score above this starts a refractory period ...
REFRACTORY = 100  # ... of this many points, scored 0: one alert per event, not one per point
WARMUP = 100  # points an entity must have seen before it may score anything: its range is still forming
REL_FLOOR = 1e-3  # scale floor as a fraction of the seen range, so flat series don't divide by zero
TINY = 1e-12

# State row layout: one float per field.
FIELDS = ("level", "scale", "fast", "fast_seasonal", "scale_seasonal", "low", "high",
          "refractory", "typical_surprise", "seen")
INITIAL_STATE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])

# Batches with fewer points per round than this run entity by entity on plain floats.
MIN_POINTS_PER_ROUND = 16

_ARRAY_OPS = SimpleNamespace(maximum=np.maximum, minimum=np.minimum, where=np.where, isnan=np.isnan)
_FLOAT_OPS = SimpleNamespace(maximum=max, minimum=min, where=lambda c, a, b: a if c else b, isnan=math.isnan)


def _clip(ops: SimpleNamespace, r: Any, bound: Any) -> Any:
    return ops.maximum(-bound, ops.minimum(r, bound))


def _step(ops: SimpleNamespace, state: tuple, seasonal: Any, v: Any) -> tuple[Any, tuple, Any]:
    """Score one point per entity, then learn from it: (score, new state, new slot baseline).

    `seasonal` is the entity's baseline for the point's time-of-day slot (NaN if
    the slot was never visited). Works on floats or on equally shaped arrays.
    """
    level, scale, fast, fast_s, scale_s, low, high, refractory, typical, seen = state
    first = seen == 0
    level, low, high = ops.where(first, v, level), ops.where(first, v, low), ops.where(first, v, high)
    unseen_slot = ops.isnan(seasonal)

    span = high - low
    floor = REL_FLOOR * span + TINY
    residual = v - level
    residual_s = v - ops.where(unseen_slot, level, seasonal)
    fast = fast + A_FAST * (residual - fast)
    fast_s = fast_s + A_FAST * (residual_s - fast_s)

    # Seasonal baseline only where the data has a daily pattern, i.e. it explains clearly more.
    seasonal_wins = scale_s < SEASONAL_GAIN * scale
    r = ops.where(seasonal_wins, residual_s, residual)
    shift = ops.where(seasonal_wins, fast_s, fast)
    z = ops.maximum(abs(r), SHIFT_WEIGHT * abs(shift)) / (ops.where(seasonal_wins, scale_s, scale) + floor)

    # Calibrate against this entity's own typical surprise so one threshold fits all entities.
    warmed = seen >= WARMUP
    surprise = ops.where(warmed & (z > Z_MIN), z / (z + SURPRISE_RATIO * typical + TINY), 0.0)
    novel = warmed & ((v > high + NEW_RANGE_MARGIN * span) | (v < low - NEW_RANGE_MARGIN * span))
    raw = ops.where(novel, ops.maximum(surprise, NEW_RANGE_SCORE), surprise)
    cooling = refractory > 0
    score = ops.where(cooling, 0.0, raw)
    refractory = ops.where(cooling, refractory - 1.0, ops.where(raw > FIRE, float(REFRACTORY), 0.0))

    # Learn, with clipped residuals so a spike shifts nothing much but a lasting change is absorbed.
    typical = ops.where(warmed, typical + A_SURPRISE * (ops.minimum(z, 3 * SURPRISE_RATIO * typical) - typical), typical)
    low, high = ops.minimum(low, v), ops.maximum(high, v)
    bound = CLIP * (scale + floor)
    learned = _clip(ops, residual, bound)
    level = level + A_LEVEL * learned
    scale = scale + A_LEVEL * (abs(learned) - scale)
    bound_s = CLIP * (scale_s + floor)
    seasonal = ops.where(unseen_slot, v, seasonal + A_SEASONAL * _clip(ops, residual_s, bound_s))
    scale_s = scale_s + A_LEVEL * (ops.minimum(abs(residual_s), bound_s) - scale_s)
    state = (level, scale, fast, fast_s, scale_s, low, high, refractory, typical, seen + 1.0)
    return score, state, seasonal


def time_slots(ts_ms: np.ndarray) -> np.ndarray:
    """Time-of-day slot (UTC) of each timestamp in epoch milliseconds."""
    return (np.asarray(ts_ms, dtype=np.int64) // SLOT_MS) % SLOTS_PER_DAY


class SeasonalDetector:
    """Online detector for many entities; entity indices are dense small integers.

    Scores are in [0, 1]; high scores are emitted sparingly (once per event,
    then a refractory period) because an alert per point of the same event is
    noise to an operator and a false positive to NAB.
    """

    def __init__(self) -> None:
        self.state = np.empty((0, len(FIELDS)))
        self.seasonal = np.empty((0, SLOTS_PER_DAY))

    @property
    def n_entities(self) -> int:
        return self.state.shape[0]

    def _grow(self, n_entities: int) -> None:
        """New entity indices get fresh rows; existing rows are kept as they are."""
        extra = n_entities - self.n_entities
        if extra > 0:
            self.state = np.vstack([self.state, np.tile(INITIAL_STATE, (extra, 1))])
            self.seasonal = np.vstack([self.seasonal, np.full((extra, SLOTS_PER_DAY), np.nan)])

    def score(self, entity_idx: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Score each point, then learn from it, in the order given per entity.

        Points of the same entity are processed in batch order, so handing over
        a series in one call or point by point gives the same scores.
        """
        entity_idx = np.asarray(entity_idx, dtype=np.int64)
        values = np.asarray(values, dtype=float)
        slots = time_slots(ts_ms)
        scores = np.zeros(values.size)
        if values.size == 0:
            return scores
        self._grow(int(entity_idx.max()) + 1)

        # Rank of each point among its entity's points in this batch: round r holds every entity's r-th point.
        order = np.argsort(entity_idx, kind="stable")
        sorted_entities = entity_idx[order]
        group_start = np.flatnonzero(np.diff(sorted_entities, prepend=-1))
        group_size = np.diff(group_start, append=order.size)
        rank = np.arange(order.size) - np.repeat(group_start, group_size)

        if order.size >= MIN_POINTS_PER_ROUND * (rank.max() + 1):
            for r in range(rank.max() + 1):
                points = order[rank == r]
                scores[points] = self._advance_entities(entity_idx[points], slots[points], values[points])
        else:
            for start, size in zip(group_start, group_size):
                points = order[start : start + size]
                scores[points] = self._advance_one(int(entity_idx[points[0]]), slots[points], values[points])
        return scores

    def _advance_entities(self, entities: np.ndarray, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """One point for each of several distinct entities, vectorised across them."""
        score, state, seasonal = _step(_ARRAY_OPS, tuple(self.state[entities].T), self.seasonal[entities, slots], values)
        self.state[entities] = np.column_stack(state)
        self.seasonal[entities, slots] = seasonal
        return score

    def _advance_one(self, entity: int, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Many points of one entity, stepped on plain floats."""
        state = tuple(self.state[entity].tolist())
        seasonal = self.seasonal[entity].tolist()
        scores = []
        for slot, v in zip(slots.tolist(), values.tolist()):
            score, state, seasonal[slot] = _step(_FLOAT_OPS, state, seasonal[slot], v)
            scores.append(score)
        self.state[entity] = state
        self.seasonal[entity] = seasonal
        return np.array(scores, dtype=float)
