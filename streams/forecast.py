"""Online forecasts for many series at once: damped-trend exponential smoothing with a
time-of-day profile, and intervals learnt from the model's own errors.

The shape is River's `learn_one` / `forecast` / `score_one`, but every call takes arrays
and the state of every series is a row of numpy columns, a *slot* per series (like the
windows' `Block`). Time is cut into fixed steps (`step_ms`: the window in the worker, the
cadence in NAB); a point's step is `ts // step_ms`, and a gap of g steps advances level and
trend by g steps, so a series with holes needs no filling.

Per slot the model keeps (additive Holt-Winters in error-correction form):
- level and damped trend, learnt from the one-step error (rates ALPHA and the config's
  `trend_rate`, damping `trend_damping`);
- per horizon h, the share of the last one-step error still present h steps later (a
  regression of h-step errors on the one-step error before them): a forecast adds that
  share of the last error, so smooth series are forecast close to their last value at
  short horizons and by level and profile further out (Chatfield's AR(1) adjustment,
  with the decay learnt per horizon rather than assumed geometric);
- a daily profile of `profile_bins` time-of-day bins (coarser than the step if wanted, so
  a 60 s step needs no 1,440-float profile), learnt with rate GAMMA;
- a weekly correction of `week_bins` time-of-week bins: what the daily profile misses on
  this weekday, learnt from the second week on and used in forecasts only while it beats
  the daily profile alone by WEEK_GAIN (it helps city-traffic-like series such as NAB's
  nyc_taxi, and hurts noisy ones such as the Twitter volumes);
- per horizon h = 1..`horizon`, the mean absolute h-step error and a multiplier that an
  online quantile tracker moves until `coverage` of the h-step errors fall inside
  ± multiplier × mean error. Nothing about the errors' distribution is assumed, which is
  what keeps the intervals honest on spiky series.
The h-step errors are measured on real h-step forecasts: a ring of the slot's last
`horizon` steps (level, trend, one-step error) gives, when a value arrives, what the
model said h steps before (with today's profile).

Surprise (`score`) is the value's distance from its forecast in units of the interval's
half-width, mapped to 0..1 as the rarity a tail of that shape implies (`surprise`), so
one threshold means the same rarity on every series.

Errors are clipped at CLIP interval half-widths before the model learns from them, so a
spike barely moves the level or the profile; a lasting change is carried at first by the
error share and absorbed by the level over about 1/ALPHA steps. The constants were
chosen on NAB (benchmarks/README.md) and hold for every series: nothing is tuned per
series. A forecast, interval or score only ever depends on values at or before its step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import orjson

DAY_MS = 86_400_000
ALPHA = 0.01  # level: rate of the one-step error absorbed
GAMMA = 0.1  # profile: rate of a bin's error absorbed (a bin is seen once a day)
GAMMA_WEEK = 0.05  # weekly correction: rate of a bin's error absorbed
WEEK_GAIN = 0.7  # forecasts use the weekly correction once its error is this much below the daily profile's
A_SCALE = 0.02  # rate of the mean absolute h-step errors
A_QUANTILE = 0.02  # step of the interval multipliers' quantile tracker
CLIP = 8.0  # errors are clipped at this many interval half-widths before learning
WARMUP_STEPS = 12  # a slot scores nothing before it has learnt this many points
RARITY_DECADES = 6.0  # a value whose implied tail is 10^-6 scores 1
A_AR = 0.02  # rate of the moments behind the carried error
CARRY_MAX = 0.98  # the carried share of the last error, at most
CHUNK = 1024  # slots per vectorised step
TINY = 1e-9


@dataclass(frozen=True)
class Config:
    step_ms: int = 60_000
    horizon: int = 60  # steps ahead whose errors are tracked (and intervals learnt)
    profile_bins: int = 288  # time-of-day bins of the daily profile
    week_bins: int = 168  # time-of-week bins of the weekly correction (hours)
    coverage: float = 0.8  # of the prediction intervals
    # The trend: the share of each one-step error turned into slope, and the slope's damping
    # per step. NAB's forecasts are best with next to no trend (a slope fitted to noise runs
    # away); warning of a ramp needs a quick one (see benchmarks/README.md, early warning).
    trend_rate: float = 0.0002
    trend_damping: float = 0.8

    def __post_init__(self) -> None:
        if (self.step_ms <= 0 or DAY_MS % self.step_ms or min(self.horizon, self.profile_bins, self.week_bins) < 1
                or not 0 < self.coverage < 1 or not 0 <= self.trend_damping < 1 or self.trend_rate < 0):
            raise ValueError(f"forecast config {self}: the step must divide a day, horizon and bins be positive, "
                             "coverage lie in (0, 1), trend damping in [0, 1), trend rate be ≥ 0")


# Per-slot columns: name → (dtype, columns per slot as a function of the config, initial value).
_COLUMNS = {
    "level": (np.float64, lambda c: (), 0.0),
    "trend": (np.float64, lambda c: (), 0.0),
    "last_step": (np.int64, lambda c: (), -1),  # -1: nothing learnt yet
    "seen": (np.int64, lambda c: (), 0),
    "profile": (np.float64, lambda c: (c.profile_bins,), np.nan),  # NaN: bin never visited
    "week": (np.float64, lambda c: (c.week_bins,), 0.0),  # the weekday's deviation from the daily profile
    "week_errors": (np.float64, lambda c: (2,), 0.0),  # mean |one-step error| without and with the weekly term
    # What the slot was at each of its last `horizon` steps, at column step % horizon:
    # (step, level, trend, one-step error), the step as a float (exact below 2^53) so that
    # one gather fetches all four.
    "ring": (np.float64, lambda c: (c.horizon, 4), -1.0),
    "resid": (np.float64, lambda c: (), 0.0),  # the last one-step error of level + trend + profile
    "ar_cov": (np.float64, lambda c: (c.horizon,), 0.0),  # per h: E[h-step error · one-step error h before]
    "ar_var": (np.float64, lambda c: (c.horizon,), 0.0),  # per h: E[(one-step error h before)²]
    "error": (np.float64, lambda c: (c.horizon,), 0.0),  # mean |h-step error|
    "width": (np.float64, lambda c: (c.horizon,), 1.6),  # interval half-width / error (normal: 1.28 σ / 0.8 σ)
}


def surprise(z: np.ndarray, coverage: float) -> np.ndarray:
    """0..1 from a distance z in interval half-widths: the tail beyond the interval holds
    1 - coverage, and an exponential tail of that weight gives 10^-(z·log10(1/(1-coverage)))
    beyond z; its order of magnitude over RARITY_DECADES is the score."""
    return np.minimum(1.0, z * math.log10(1.0 / (1.0 - coverage)) / RARITY_DECADES)


@dataclass(frozen=True)
class Forecast:
    """Per asked slot and step ahead 1..k: (slots, k) arrays."""

    step: np.ndarray  # the step number the forecast is for (ts = step · step_ms)
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


class Forecaster:
    """Online forecasts for dense integer slots; state grows as new slots appear."""

    def __init__(self, config: Config = Config(), capacity: int = 0) -> None:
        self.config = config
        self.state = {name: np.full((capacity, *cols(config)), init, dtype)
                      for name, (dtype, cols, init) in _COLUMNS.items()}

    @property
    def capacity(self) -> int:
        return len(self.state["level"])

    def reserve(self, slots: int) -> None:
        extra = slots - self.capacity
        if extra > 0:
            for name, (dtype, cols, init) in _COLUMNS.items():
                self.state[name] = np.concatenate([self.state[name], np.full((extra, *cols(self.config)), init, dtype)])

    def _damped(self, g: np.ndarray) -> np.ndarray:
        """Σ_{i=1..g} φ^i: how far a unit slope carries in g steps."""
        phi = self.config.trend_damping
        return phi * (1.0 - phi ** g) / (1.0 - phi)

    def _bin(self, step: np.ndarray) -> np.ndarray:
        day_steps = DAY_MS // self.config.step_ms
        return (step % day_steps) * self.config.profile_bins // day_steps

    def _week_bin(self, step: np.ndarray) -> np.ndarray:
        week_steps = 7 * DAY_MS // self.config.step_ms
        return (step % week_steps) * self.config.week_bins // week_steps

    # ------------------------------------------------------------ learning

    def learn(self, slots: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Learn points given in time order per slot; return each point's surprise (0..1)
        against the state just before it: what `score` would have said (up to float rounding).

        A point at or before its slot's last learnt step, or not finite, is skipped (score
        0): late or bad input must not rewind a series' time or poison its state."""
        slots = np.asarray(slots, np.int64)
        steps = np.asarray(ts_ms, np.int64) // self.config.step_ms
        values = np.asarray(values, np.float64)
        scores = np.zeros(values.size)
        if values.size == 0:
            return scores
        self.reserve(int(slots.max()) + 1)
        for points in _rounds(slots):
            # In chunks, so that the (slots, horizon) temporaries stay in the CPU's cache.
            for chunk in np.array_split(points, -(-points.size // CHUNK)):
                scores[chunk] = self._step(slots[chunk], steps[chunk], values[chunk])
        return scores

    def _step(self, slots: np.ndarray, step: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One point for each of distinct slots."""
        s, c = self.state, self.config
        last = s["last_step"][slots]
        ok = (step > last) & np.isfinite(y)
        slots, step, y, last = slots[ok], step[ok], y[ok], last[ok]
        scores = np.zeros(ok.size)
        first = last < 0
        level = np.where(first, y, s["level"][slots])
        trend = s["trend"][slots]
        gap = np.where(first, 1, step - last)
        b = self._bin(step)
        wb = self._week_bin(step)
        daily = s["profile"][slots, b]
        unseen = np.isnan(daily)
        daily = np.where(unseen, 0.0, daily)
        weekly = s["week"][slots, wb]
        use_week = self._use_week(slots)
        seasonal = daily + np.where(use_week, weekly, 0.0)

        # What the model said about this step, h = 1..horizon steps before (where it existed).
        h = np.arange(1, c.horizon + 1)
        ring = (step[:, None] - h) % c.horizon
        rows = slots[:, None]
        then = s["ring"][rows, ring]
        said = then[..., 0] == step[:, None] - h
        carry = self._carry(slots)
        base = then[..., 1] + then[..., 2] * self._damped(h) + seasonal[:, None]
        before = then[..., 3]
        past = base + carry * before
        err = np.abs(y[:, None] - past)
        error, width = s["error"][slots], s["width"][slots]
        seen = s["seen"][slots]

        # Surprise against the forecast from the last learnt point, g steps ago.
        g = np.minimum(gap, c.horizon) - 1
        pred_level = level + trend * self._damped(gap)
        e = y - (pred_level + seasonal)
        resid = s["resid"][slots]
        half = width[np.arange(len(slots)), g] * error[np.arange(len(slots)), g] + TINY
        z = np.abs(e - carry[np.arange(len(slots)), g] * resid) / half
        score = np.where((seen >= WARMUP_STEPS) & ~unseen, surprise(z, c.coverage), 0.0)
        scores[ok] = score

        # Interval learning: the mean error, and the multiplier moved toward the coverage quantile.
        fresh = said & (error == 0)
        outside = err > width * error
        width = np.where(said & ~fresh, width + A_QUANTILE * (outside - (1.0 - c.coverage)), width)
        learnt = error + A_SCALE * (np.minimum(err, CLIP * width * error) - error)
        error = np.where(fresh, err, np.where(said, learnt, error))

        # Level, trend and profile, from the clipped error.
        # Nothing is clipped before a yardstick exists: while warming up, or on a bin's first visit.
        bound = np.where((seen >= WARMUP_STEPS) & ~unseen, CLIP * half, np.inf)
        ec = np.clip(e, -bound, bound)
        # On its first day a slot's level holds its first value and the profile takes every
        # deviation from it, so the second day starts from "same time yesterday"; then the
        # profile averages its days (rate 1/days) until it settles to forgetting at GAMMA.
        days = seen * c.step_ms // DAY_MS + 1
        alpha = np.where(days == 1, 0.0, ALPHA)
        new_level = pred_level + alpha * ec
        trend_rate = np.where(days == 1, 0.0, c.trend_rate)
        new_trend = np.where(first, 0.0, trend * c.trend_damping ** gap + trend_rate * ec)
        s["profile"][slots, b] = daily + np.maximum(GAMMA, 1.0 / days) * (1 - alpha) * ec
        # Once a week has been seen, what the day's profile misses is the weekday's.
        # It learns from its own error whether or not forecasts use it yet, and they use it
        # once it has clearly beaten the daily profile alone (most series have no weekly rhythm).
        e_day = np.where(use_week, ec + weekly, ec)
        e_week = np.clip(e_day - weekly, -bound, bound)
        # Rate 1/weeks completed, then GAMMA_WEEK, as the daily profile does with days.
        rate = np.where(days > 7, np.maximum(GAMMA_WEEK, 1.0 / np.maximum(days // 7, 1)), 0.0)
        s["week"][slots, wb] = weekly + rate * (1 - alpha) * e_week
        errors = s["week_errors"][slots]
        s["week_errors"][slots] = np.where((days > 7)[:, None], errors + A_SCALE * (
            np.abs(np.column_stack([e_day, e_week])) - errors), errors)
        ec = np.where(unseen, 0.0, ec)  # a first visit's error went into the profile, not on to the next step
        s["level"][slots], s["trend"][slots] = new_level, new_trend
        # How much of a one-step error is still there h steps later: a regression per h.
        base_err = np.clip(y[:, None] - base, -bound[:, None], bound[:, None])
        s["ar_cov"][slots] += np.where(said, A_AR * (base_err * before - s["ar_cov"][slots]), 0.0)
        s["ar_var"][slots] += np.where(said, A_AR * (before * before - s["ar_var"][slots]), 0.0)
        s["resid"][slots] = ec
        s["error"][slots], s["width"][slots] = error, width
        at = step % c.horizon
        s["ring"][slots, at] = np.column_stack([step, new_level, new_trend, ec])
        s["last_step"][slots], s["seen"][slots] = step, seen + 1
        return scores

    def _use_week(self, slots: np.ndarray) -> np.ndarray:
        errors = self.state["week_errors"][slots]
        weeks = self.state["seen"][slots] * self.config.step_ms // (7 * DAY_MS)
        return (weeks >= 2) & (errors[:, 1] < WEEK_GAIN * errors[:, 0])

    def _carry(self, slots: np.ndarray) -> np.ndarray:
        """Per slot and h = 1..horizon, the share of the last one-step error that is still
        in the error h steps later: (slots, horizon)."""
        s = self.state
        return np.clip(s["ar_cov"][slots] / (s["ar_var"][slots] + TINY), 0.0, CARRY_MAX)

    # ------------------------------------------------------------ reading

    def forecast(self, slots: np.ndarray, k: int) -> Forecast:
        """Steps 1..k after each slot's last learnt point, with `coverage` intervals.
        Beyond the tracked horizon the interval grows like the square root of the steps."""
        s, c = self.state, self.config
        slots = np.asarray(slots, np.int64)
        self.reserve(int(slots.max(initial=-1)) + 1)  # a slot never learnt is forecast as NaN
        h = np.arange(1, k + 1)
        last = s["last_step"][slots]
        step = last[:, None] + h
        weekly = s["week"][slots[:, None], self._week_bin(step)]
        weekly = np.where(self._use_week(slots)[:, None], weekly, 0.0)
        seasonal = s["profile"][slots[:, None], self._bin(step)] + weekly
        carry = self._carry(slots)[:, np.minimum(h, c.horizon) - 1] * (h <= c.horizon)
        mean = (s["level"][slots, None] + s["trend"][slots, None] * self._damped(h) + np.nan_to_num(seasonal)
                + carry * s["resid"][slots, None])
        tracked = np.minimum(h, c.horizon) - 1
        half = (s["width"][slots] * s["error"][slots])[:, tracked] * np.sqrt(np.maximum(h / c.horizon, 1.0))
        mean = np.where(last[:, None] < 0, np.nan, mean)
        return Forecast(step, mean, mean - half, mean + half)

    def score(self, slots: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Surprise (0..1) of each value against the slot's forecast for its step, learning
        nothing: River's `score_one`. Points at or before the last learnt step score 0."""
        slots = np.asarray(slots, np.int64)
        steps = np.asarray(ts_ms, np.int64) // self.config.step_ms
        values = np.asarray(values, np.float64)
        self.reserve(int(slots.max(initial=-1)) + 1)
        last = self.state["last_step"][slots]
        ahead = np.maximum(steps - last, 1)
        fc = self.forecast(slots, int(min(ahead.max(initial=1), 10 * self.config.horizon)))
        col = np.minimum(ahead, fc.mean.shape[1]) - 1
        rows = np.arange(len(slots))
        half = (fc.high - fc.mean)[rows, col] + TINY
        z = np.abs(values - fc.mean[rows, col]) / half
        ready = (steps > last) & (self.state["seen"][slots] >= WARMUP_STEPS) & np.isfinite(z)
        return np.where(ready, surprise(np.nan_to_num(z), self.config.coverage), 0.0)

    # ------------------------------------------------------------ snapshots

    def encode(self) -> bytes:
        """The whole state, exactly: a JSON header (config, array layout) and raw arrays."""
        arrays = [np.ascontiguousarray(self.state[name]) for name in _COLUMNS]
        header = orjson.dumps({"config": asdict(self.config),
                               "arrays": [(name, a.dtype.str, a.shape) for name, a in zip(_COLUMNS, arrays)]})
        return b"".join([len(header).to_bytes(8, "big"), header] + [a.tobytes() for a in arrays])

    @classmethod
    def decode(cls, payload: bytes) -> "Forecaster":
        size = int.from_bytes(payload[:8], "big")
        header = orjson.loads(payload[8:8 + size])
        model = cls(Config(**header["config"]))
        at = 8 + size
        for name, dtype, shape in header["arrays"]:
            a = np.frombuffer(payload, np.dtype(dtype), int(np.prod(shape)), at).reshape(shape).copy()
            model.state[name] = a
            at += a.nbytes
        return model


def _rounds(slots: np.ndarray) -> list[np.ndarray]:
    """Indices of the points, cut into rounds of distinct slots: round r holds every slot's
    r-th point, so each round can be learnt in one vectorised step, in time order per slot."""
    order = np.argsort(slots, kind="stable")
    start = np.flatnonzero(np.diff(slots[order], prepend=-1))
    rank = np.arange(order.size) - np.repeat(start, np.diff(start, append=order.size))
    by_rank = np.argsort(rank, kind="stable")
    cuts = np.flatnonzero(np.diff(rank[by_rank])) + 1
    return np.split(order[by_rank], cuts)
