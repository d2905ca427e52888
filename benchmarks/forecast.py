"""Walk NAB-layout series online with the forecaster and score its forecasts.

    python -m benchmarks.forecast --data DIR --out FILE [--outlook smooth|counts]

Every `timestamp,value` CSV under DIR/data (or DIR) is one series. Series of the same
cadence share one `Forecaster`, a slot each, and are walked together point by point:
learn a point, then forecast 1..12 steps after it. A forecast for h steps ahead is
compared with the value that arrives h steps later, against two baselines made at the
same moment: the value one day before the target (seasonal naive; the last value where
a series is shorter than two days) and the last value. Per horizon and series the ratio
of mean absolute errors is taken over the targets where all three exist, after the
series' first day; the table shows the geometric mean over series (relative errors
multiply, and a ratio of 0.5 should weigh as much as one of 2), and the JSON has
every series. Coverage is the share of targets inside the 80 % interval.

`--outlook smooth|counts` walks them with that kind of the workers' model instead
(streams/outlook.py: its profile bins and no weekly correction, at the series' own
cadence, which for most NAB series is the outlook's 5-minute step).

A series "has a daily rhythm" when its values correlate at a lag of one day (r ≥ 0.5,
over the whole file: a label for the report, not something the model sees).
The data is read in place and never copied.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

from streams import outlook
from streams.forecast import DAY_MS, Config, Forecaster

HORIZONS = (1, 3, 12)
DAILY_R = 0.5
PROFILE_BINS = 288


@dataclass
class Series:
    name: str
    ts_ms: np.ndarray
    values: np.ndarray
    step_ms: int = 0
    forecasts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None  # h → mean, low, high per origin row


def load(root: Path) -> list[Series]:
    base = root / "data" if (root / "data").is_dir() else root
    series = []
    for path in sorted(base.rglob("*.csv")):
        rows = [line.split(",") for line in path.read_text().split("\n")[1:] if line.strip()]
        if len(rows) < 2:
            print(f"skipped {path}: fewer than two rows", file=sys.stderr)
            continue
        try:
            ts = np.array([r[0] for r in rows], dtype="datetime64[ms]").astype(np.int64)
            values = np.array([float(r[1]) for r in rows])
        except (ValueError, IndexError) as e:
            print(f"skipped {path}: not timestamp,value rows ({e})", file=sys.stderr)
            continue
        series.append(Series(str(path.relative_to(base)), ts, values))
    return series


def cadence(ts_ms: np.ndarray) -> int:
    """The series' usual step, rounded to a divisor of a day so time-of-day bins line up."""
    step = int(np.median(np.diff(ts_ms)))
    divisors = [d for d in range(1000, DAY_MS + 1, 1000) if DAY_MS % d == 0]
    return min(divisors, key=lambda d: abs(d - step))


def model_for(step_ms: int, kind: str | None = None) -> Forecaster:
    """The forecaster for series of one cadence: 5-minute profile bins, or one per step;
    with `kind`, the outlook's model of that kind (its bins, no weekly correction)."""
    bins, week = ((outlook.CONFIGS[kind].profile_bins, outlook.CONFIGS[kind].week_bins) if kind
                  else (PROFILE_BINS, Config().week_bins))
    return Forecaster(Config(step_ms=step_ms, horizon=max(HORIZONS), profile_bins=min(bins, DAY_MS // step_ms),
                             week_bins=week))


def walk(group: list[Series], step_ms: int, kind: str | None = None) -> float:
    """Learn every series of one cadence point by point, keeping the forecasts made after
    each point; returns the seconds spent in the model."""
    model = model_for(step_ms, kind)
    longest = max(s.values.size for s in group)
    means = [np.full((s.values.size, max(HORIZONS)), np.nan) for s in group]
    lows, highs = [m.copy() for m in means], [m.copy() for m in means]
    seconds = 0.0
    for r in range(longest):
        live = [i for i, s in enumerate(group) if s.values.size > r]
        slots = np.array(live)
        start = time.perf_counter()
        model.learn(slots, np.array([group[i].ts_ms[r] for i in live]), np.array([group[i].values[r] for i in live]))
        fc = model.forecast(slots, max(HORIZONS))
        seconds += time.perf_counter() - start
        for j, i in enumerate(live):
            means[i][r], lows[i][r], highs[i][r] = fc.mean[j], fc.low[j], fc.high[j]
    for i, s in enumerate(group):
        s.step_ms = step_ms
        s.forecasts = {h: (means[i][:, h - 1], lows[i][:, h - 1], highs[i][:, h - 1]) for h in HORIZONS}
    return seconds


def worker_speed(slots: int = 10_000, rounds: int = 30) -> dict[str, float]:
    """Points/s in the worker's shape: every series learns one point per window (60 s), all in
    one call, and is forecast the next hour. The NAB walk above has few series per call, so
    there the fixed cost of a call dominates."""
    model = Forecaster(Config(step_ms=60_000, horizon=60))
    rng = np.random.default_rng(0)
    every = np.arange(slots)
    learning = forecasting = 0.0
    for r in range(rounds):
        values = 100 + 50 * np.sin(2 * np.pi * r / 1440) + rng.normal(0, 5, slots)
        start = time.perf_counter()
        model.learn(every, np.full(slots, r * 60_000), values)
        learnt = time.perf_counter()
        model.forecast(every, 60)
        forecasting += time.perf_counter() - learnt
        learning += learnt - start
    points = slots * rounds
    return {"slots": slots, "horizon": 60, "learn_points_per_s": points / learning,
            "learn_and_forecast_points_per_s": points / (learning + forecasting),
            "state_bytes_per_series": sum(a.nbytes for a in model.state.values()) / slots}


def daily_rhythm(s: Series) -> bool:
    lag = DAY_MS // s.step_ms
    if s.values.size < 2 * lag:
        return False
    a, b = s.values[:-lag], s.values[lag:]
    if a.std() == 0 or b.std() == 0:
        return False
    return float(np.corrcoef(a, b)[0, 1]) >= DAILY_R


def evaluate(s: Series) -> dict[str, dict[str, float | None]]:
    """Per horizon: MAE ratios against both baselines, and interval coverage."""
    steps = s.ts_ms // s.step_ms
    day = DAY_MS // s.step_ms
    short = steps[-1] - steps[0] < 2 * day

    def row_of(target: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(steps, target), steps.size - 1)
        return np.where(steps[at] == target, at, -1)

    out = {}
    for h in HORIZONS:
        mean, low, high = s.forecasts[h]
        origin = row_of(steps - h)
        reference = origin if short else row_of(steps - day)
        use = (origin >= 0) & (reference >= 0) & (steps - steps[0] >= day)
        use[use] &= np.isfinite(mean[origin[use]])
        y = s.values[use]
        model = np.abs(y - mean[origin[use]]).mean() if use.any() else np.nan
        seasonal = np.abs(y - s.values[reference[use]]).mean() if use.any() else np.nan
        last = np.abs(y - s.values[origin[use]]).mean() if use.any() else np.nan
        inside = (low[origin[use]] <= y) & (y <= high[origin[use]])
        out[str(h)] = {"mase_seasonal": _ratio(model, seasonal), "mase_last": _ratio(model, last),
                       "coverage80": float(inside.mean()) if use.any() else None, "targets": int(use.sum())}
    return out


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if np.isfinite(a) and np.isfinite(b) and b > 0 else None


def summarise(per_series: dict[str, dict], names: list[str]) -> dict[str, dict[str, float | None]]:
    """Geometric mean of each ratio over the series that have it; coverage over all targets."""
    out = {}
    for h in map(str, HORIZONS):
        rows = [per_series[n][h] for n in names]
        entry: dict[str, float | None] = {}
        for key in ("mase_seasonal", "mase_last"):
            ratios = [r[key] for r in rows if r[key] is not None and r[key] > 0]
            entry[key] = float(np.exp(np.mean(np.log(ratios)))) if ratios else None
        targets = sum(r["targets"] for r in rows)
        entry["coverage80"] = (sum(r["coverage80"] * r["targets"] for r in rows if r["coverage80"] is not None)
                               / targets) if targets else None
        out[h] = entry
    return out


def table(title: str, horizons: dict[str, dict[str, float | None]]) -> str:
    def f(x: float | None) -> str:
        return "   -" if x is None else f"{x:.3f}"
    lines = [title, f"{'horizon':>8} {'MASE seasonal':>14} {'MASE last':>10} {'coverage80':>11}"]
    lines += [f"{h:>8} {f(v['mase_seasonal']):>14} {f(v['mase_last']):>10} {f(v['coverage80']):>11}"
              for h, v in horizons.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forecast", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("CITYBRAIN_NAB_DATA"),
                        help="NAB-layout root (CSV files under data/); default $CITYBRAIN_NAB_DATA")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--outlook", choices=sorted(outlook.CONFIGS),
                        help="the workers' model of that kind (streams/outlook.py) instead of the full one")
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("--data or CITYBRAIN_NAB_DATA is required")
    series = load(args.data)
    if not series:
        parser.error(f"no CSV series under {args.data}")

    groups: dict[int, list[Series]] = {}
    for s in series:
        groups.setdefault(cadence(s.ts_ms), []).append(s)
    seconds = sum(walk(group, step, args.outlook) for step, group in groups.items())

    per_series = {s.name: evaluate(s) for s in series}
    daily = [s.name for s in series if daily_rhythm(s)]
    points = sum(s.values.size for s in series)
    result = {"model": f"outlook {args.outlook}" if args.outlook else "full", "files": len(series), "points": points, "points_per_s": points / seconds,
              "horizons": summarise(per_series, list(per_series)),
              "daily": {"files": daily, "horizons": summarise(per_series, daily)},
              "worker_shape": worker_speed(), "series": per_series}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(table(f"all {len(series)} series", result["horizons"]))
    print(table(f"{len(daily)} series with a daily rhythm", result["daily"]["horizons"]))
    print(f"{points} points, {result['points_per_s']:,.0f} points/s (learn + forecast 1..12, 1 core)")
    shape = result["worker_shape"]
    print(f"worker's shape ({shape['slots']:,} series a call, 60 steps ahead): {shape['learn_points_per_s']:,.0f} "
          f"points/s learning, {shape['learn_and_forecast_points_per_s']:,.0f} with forecasts; "
          f"{shape['state_bytes_per_series']:,.0f} bytes of state per series")
    return 0


if __name__ == "__main__":
    sys.exit(main())
