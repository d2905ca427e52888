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

Signals, strongest first: a value beyond the range seen so far; a context of
value bands never seen (or not within CONTEXT_MEMORY points), as in CAD OSE; and
the residual from the level or daily baseline, scored by the larger of its ratio
to the typical surprise and its rarity among the entity's recent surprises.
Besides the state row, an entity keeps three fixed-size tables: the daily
baseline, the context table and the surprise histogram.
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
# Contextual novelty, after CAD OSE: values are cut into LEVELS bands of the seen range, and a
# point whose band, band pair or band triple (with the previous points) is new is suspicious.
LEVELS = 10
CONTEXTS = LEVELS + LEVELS**2 + LEVELS**3  # one table slot per context of orders 1, 2 and 3
CONTEXT_MEMORY = 20_000  # a context unseen for this many points counts as new again, so long streams stay sensitive
CONTEXT_SCORE = 0.9  # score when every order's context is new; a fraction of it when only some are
# Rank calibration: a histogram of log2(z) with exponential forgetting gives the fraction of this
# entity's recent points at least as surprising as this one, so scores mean the same rarity everywhere.
BINS = 72  # quarter-octave bins of z from 2^-10 to 2^8
A_HIST = 1e-3  # the histogram forgets at this rate per point (memory of ~1000 points)
RARITY_DECADES = 6.0  # a point rarer than 1 in 10^RARITY_DECADES scores 1 (capped just below a new extreme)

# State row layout: one float per field.
FIELDS = ("level", "scale", "fast", "fast_seasonal", "scale_seasonal", "low", "high",
          "refractory", "typical_surprise", "seen", "band1", "band2")
INITIAL_STATE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
# Histogram row: BINS decayed counts, their total, and the weight of the next count (see _learn_rank).
INITIAL_HIST = np.concatenate([np.zeros(BINS + 1), [1.0]])

# Batches with fewer points per round than this run entity by entity on plain floats.
MIN_POINTS_PER_ROUND = 16



def _rows(table: np.ndarray) -> np.ndarray:
    return np.arange(table.shape[0])


def _array_put(table: np.ndarray, key: np.ndarray, value: Any) -> None:
    table[_rows(table), key] = value


def _array_tail(hist: np.ndarray, b: np.ndarray) -> np.ndarray:
    above = np.arange(BINS) > b[:, None]
    return (hist[:, :BINS] * above).sum(axis=1) + 0.5 * hist[_rows(hist), b]


def _float_put(table: list, key: int, value: float) -> None:
    table[key] = value


def _float_tail(hist: list, b: int) -> float:
    return sum(hist[b + 1 : BINS]) + 0.5 * hist[b]


# Tables (context table, histogram) are one list per entity on floats and one row per entity on arrays.
_ARRAY_OPS = SimpleNamespace(maximum=np.maximum, minimum=np.minimum, where=np.where, isnan=np.isnan,
                             log2=np.log2, log10=np.log10, to_int=lambda x: x.astype(np.int64),
                             take=lambda t, k: t[_rows(t), k], put=_array_put, tail=_array_tail)
_FLOAT_OPS = SimpleNamespace(maximum=max, minimum=min, where=lambda c, a, b: a if c else b, isnan=math.isnan,
                             log2=math.log2, log10=math.log10, to_int=int,
                             take=lambda t, k: t[k], put=_float_put, tail=_float_tail)


def _clip(ops: SimpleNamespace, r: Any, bound: Any) -> Any:
    return ops.maximum(-bound, ops.minimum(r, bound))


def _rarity(ops: SimpleNamespace, hist: Any, z: Any) -> tuple[Any, Any]:
    """(score from how rare z is in the entity's recent history, z's histogram bin)."""
    b = ops.maximum(0, ops.minimum(BINS - 1, ops.to_int(4.0 * ops.log2(z + 1e-3) + 40.0)))
    total = hist[BINS] if isinstance(hist, list) else hist[:, BINS]
    tail = ops.tail(hist, b) / ops.maximum(total, TINY)
    tail = ops.where(total > 0, tail, 1.0)
    return ops.minimum(0.98, -ops.log10(ops.maximum(tail, 1e-9)) / RARITY_DECADES), b


def _learn_rank(ops: SimpleNamespace, hist: Any, b: Any) -> None:
    """Count z's bin. Rather than decay every bin each point, later counts weigh more (by
    1/(1-A_HIST) per point), which is the same up to a common factor; rescale before overflow."""
    if isinstance(hist, list):
        weight = hist[BINS + 1]
        hist[b] += weight
        hist[BINS] += weight
        hist[BINS + 1] = weight / (1.0 - A_HIST)
        if hist[BINS + 1] > 1e100:
            hist[:] = [h / 1e100 for h in hist]
    else:
        weight = hist[:, BINS + 1]
        hist[_rows(hist), b] += weight
        hist[:, BINS] += weight
        hist[:, BINS + 1] = weight / (1.0 - A_HIST)
        hist[hist[:, BINS + 1] > 1e100] /= 1e100


def _step(ops: SimpleNamespace, state: tuple, seasonal: Any, v: Any, contexts: Any, hist: Any) -> tuple[Any, tuple, Any]:
    """Score one point per entity, then learn from it: (score, new state, new slot baseline).

    `seasonal` is the entity's baseline for the point's time-of-day slot (NaN if
    the slot was never visited). `contexts` (when each context was last seen) and
    `hist` (the z histogram) are the entity's tables and are updated in place.
    Works on floats or on equally shaped arrays.
    """
    level, scale, fast, fast_s, scale_s, low, high, refractory, typical, seen, band1, band2 = state
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
    # Two yardsticks: the mean surprise, and the rank among recent surprises; the rank keeps
    # heavy-tailed entities from alerting on their routine spikes, the mean catches gradual drifts.
    rarity, z_bin = _rarity(ops, hist, z)
    surprise = ops.where(warmed & (z > Z_MIN), ops.maximum(z / (z + SURPRISE_RATIO * typical + TINY), rarity), 0.0)
    novel = warmed & ((v > high + NEW_RANGE_MARGIN * span) | (v < low - NEW_RANGE_MARGIN * span))
    raw = ops.where(novel, ops.maximum(surprise, NEW_RANGE_SCORE), surprise)

    # Contextual novelty: which band of the range (including v) the point is in, and whether this
    # band, after the previous one or two, occurred within the last CONTEXT_MEMORY points.
    lo, hi = ops.minimum(low, v), ops.maximum(high, v)
    band = ops.minimum(LEVELS - 1, ops.to_int(LEVELS * (v - lo) / (hi - lo + TINY)))
    b1, b2 = ops.to_int(band1), ops.to_int(band2)
    keys = (band, LEVELS + b1 * LEVELS + band, LEVELS + LEVELS**2 + (b2 * LEVELS + b1) * LEVELS + band)
    new = 0.0
    for key in keys:
        last = ops.take(contexts, key)  # 1 + the point count when last seen; 0 = never
        new = new + ops.where((last == 0) | (seen + 1.0 - last > CONTEXT_MEMORY), 1.0 / len(keys), 0.0)
        ops.put(contexts, key, seen + 1.0)
    raw = ops.where(warmed, ops.maximum(raw, CONTEXT_SCORE * new), raw)
    band2, band1 = band1, band + 0.0
    cooling = refractory > 0
    score = ops.where(cooling, 0.0, raw)
    refractory = ops.where(cooling, refractory - 1.0, ops.where(raw > FIRE, float(REFRACTORY), 0.0))

    # Learn, with clipped residuals so a spike shifts nothing much but a lasting change is absorbed.
    _learn_rank(ops, hist, z_bin)
    typical = ops.where(warmed, typical + A_SURPRISE * (ops.minimum(z, 3 * SURPRISE_RATIO * typical) - typical), typical)
    low, high = ops.minimum(low, v), ops.maximum(high, v)
    bound = CLIP * (scale + floor)
    learned = _clip(ops, residual, bound)
    level = level + A_LEVEL * learned
    scale = scale + A_LEVEL * (abs(learned) - scale)
    bound_s = CLIP * (scale_s + floor)
    seasonal = ops.where(unseen_slot, v, seasonal + A_SEASONAL * _clip(ops, residual_s, bound_s))
    scale_s = scale_s + A_LEVEL * (ops.minimum(abs(residual_s), bound_s) - scale_s)
    state = (level, scale, fast, fast_s, scale_s, low, high, refractory, typical, seen + 1.0, band1, band2)
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
        self.contexts = np.empty((0, CONTEXTS))
        self.hist = np.empty((0, BINS + 2))

    @property
    def n_entities(self) -> int:
        return self.state.shape[0]

    def _grow(self, n_entities: int) -> None:
        """New entity indices get fresh rows; existing rows are kept as they are."""
        extra = n_entities - self.n_entities
        if extra > 0:
            self.state = np.vstack([self.state, np.tile(INITIAL_STATE, (extra, 1))])
            self.seasonal = np.vstack([self.seasonal, np.full((extra, SLOTS_PER_DAY), np.nan)])
            self.contexts = np.vstack([self.contexts, np.zeros((extra, CONTEXTS))])
            self.hist = np.vstack([self.hist, np.tile(INITIAL_HIST, (extra, 1))])

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
        contexts, hist = self.contexts[entities], self.hist[entities]  # copies, updated by _step
        score, state, seasonal = _step(_ARRAY_OPS, tuple(self.state[entities].T), self.seasonal[entities, slots],
                                       values, contexts, hist)
        self.state[entities] = np.column_stack(state)
        self.seasonal[entities, slots] = seasonal
        self.contexts[entities], self.hist[entities] = contexts, hist
        return score

    def _advance_one(self, entity: int, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Many points of one entity, stepped on plain floats."""
        state = tuple(self.state[entity].tolist())
        seasonal = self.seasonal[entity].tolist()
        contexts, hist = self.contexts[entity].tolist(), self.hist[entity].tolist()
        scores = []
        for slot, v in zip(slots.tolist(), values.tolist()):
            score, state, seasonal[slot] = _step(_FLOAT_OPS, state, seasonal[slot], v, contexts, hist)
            scores.append(score)
        self.state[entity] = state
        self.seasonal[entity] = seasonal
        self.contexts[entity], self.hist[entity] = contexts, hist
        return np.array(scores, dtype=float)
