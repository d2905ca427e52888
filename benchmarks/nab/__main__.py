"""Run a streaming detector over a NAB-layout directory and score it.

    python -m benchmarks.nab --data NAB_ROOT --out DIR [--detector NAME]

The data is read in place (flag or CITYBRAIN_NAB_DATA) and never copied: the
corpus is licensed separately and the benchmark must work on any NAB layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from benchmarks.forecast import cadence, model_for
from benchmarks.nab.scorer import PROFILE_NAMES, Window, load_profiles, score_corpus
from streams.detectors.statistical import FIRE, REFRACTORY, SeasonalDetector


class Detector(Protocol):
    def score(self, entity_idx: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray: ...


class ForecastSurprise:
    """The forecaster's surprise (streams/forecast.py) as a detector of one series: a model
    stepping at the series' cadence, and the statistical detector's one alert per event
    (a score above FIRE silences the next REFRACTORY points), so both are judged alike."""

    def score(self, entity_idx: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        scores = model_for(cadence(ts_ms)).learn(entity_idx, ts_ms, values)
        quiet_until = -1
        for i in np.flatnonzero(scores > FIRE).tolist():
            if i <= quiet_until:
                continue
            scores[i + 1 : i + 1 + REFRACTORY] = 0.0
            quiet_until = i + REFRACTORY
        return scores


# Each factory returns a fresh detector with the service API: score(entity_idx, ts_ms, values).
DETECTORS: dict[str, Callable[[], Detector]] = {"statistical": SeasonalDetector, "forecast": ForecastSurprise}


@dataclass(frozen=True)
class Series:
    """One NAB data file with its labelled windows as row indices."""

    category: str
    name: str
    timestamps: list[str]
    ts_ms: np.ndarray
    values: np.ndarray
    windows: list[Window]


def _to_ms(timestamps: Sequence[str]) -> np.ndarray:
    return np.array(timestamps, dtype="datetime64[ms]").astype(np.int64)


def load_series(nab_root: Path) -> list[Series]:
    """Every data/<category>/*.csv with its windows; files without labels have none."""
    labels = json.loads((nab_root / "labels" / "combined_windows.json").read_text())
    series = []
    for path in sorted((nab_root / "data").glob("*/*.csv")):
        lines = path.read_text().split("\n")[1:]
        rows = [line.split(",") for line in lines if line.strip()]
        timestamps = [row[0] for row in rows]
        ts_ms = _to_ms(timestamps)
        # Window bounds are timestamps of rows; inclusive on both sides.
        bounds = [_to_ms(pair) for pair in labels.get(f"{path.parent.name}/{path.name}", [])]
        windows = [
            (int(np.searchsorted(ts_ms, lo)), int(np.searchsorted(ts_ms, hi, side="right")) - 1)
            for lo, hi in bounds
        ]
        values = np.array([float(row[1]) for row in rows])
        series.append(Series(path.parent.name, path.name, timestamps, ts_ms, values, windows))
    return series


def run_detector(factory: Callable[[], Detector], series: Series) -> tuple[np.ndarray, float]:
    """Scores for one file from a fresh detector, and the seconds spent scoring.

    The whole file is handed over in one call; the detector itself walks it in
    order, so every score still depends only on rows up to its own.
    """
    detector = factory()
    entity = np.zeros(series.values.size, dtype=np.int64)
    start = time.perf_counter()
    scores = detector.score(entity, series.ts_ms, series.values)
    return scores, time.perf_counter() - start


def labels_column(n_rows: int, windows: Sequence[Window]) -> np.ndarray:
    label = np.zeros(n_rows, dtype=np.int64)
    for left, right in windows:
        label[left : right + 1] = 1
    return label


def write_results(out_dir: Path, detector: str, series: Series, scores: np.ndarray) -> None:
    """NAB's results layout, so that NAB's own scorer can read our output too."""
    target = out_dir / detector / series.category / f"{detector}_{series.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    label = labels_column(series.values.size, series.windows)
    lines = ["timestamp,value,anomaly_score,label"]
    lines += [
        f"{ts},{value!r},{score:.6f},{lab}"
        for ts, value, score, lab in zip(series.timestamps, series.values.tolist(), scores.tolist(), label.tolist())
    ]
    target.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nab", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("CITYBRAIN_NAB_DATA"),
                        help="NAB root (data/, labels/, config/); default $CITYBRAIN_NAB_DATA")
    parser.add_argument("--out", type=Path, required=True, help="results directory")
    parser.add_argument("--detector", default="statistical", choices=sorted(DETECTORS))
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("--data or CITYBRAIN_NAB_DATA is required")

    series = load_series(args.data)
    all_scores, seconds = [], 0.0
    for s in series:
        scores, elapsed = run_detector(DETECTORS[args.detector], s)
        # Rounded once so the written files and the table are scored on identical numbers.
        scores = np.round(scores, 6)
        seconds += elapsed
        all_scores.append(scores)
        write_results(args.out, args.detector, s, scores)

    points = sum(s.values.size for s in series)
    profiles = load_profiles(args.data)
    results = {
        name: score_corpus([(sc, s.windows) for sc, s in zip(all_scores, series)], profiles[name])
        for name in PROFILE_NAMES
    }
    summary = {
        "detector": args.detector,
        "files": len(series),
        "points": points,
        "scoring_seconds": seconds,
        "points_per_second": points / seconds if seconds > 0 else float("inf"),
        "profiles": {
            name: {"score": r.normalised, "threshold": r.threshold, "raw": r.raw,
                   "null": r.null, "perfect": r.perfect, "windows": r.windows}
            for name, r in results.items()
        },
    }
    (args.out / args.detector / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"{'profile':<20} {'score':>7} {'threshold':>10}")
    for name, r in results.items():
        print(f"{name:<20} {r.normalised:7.2f} {r.threshold:10.6f}")
    print(f"{len(series)} files, {points} points, {summary['points_per_second']:,.0f} points/s (scoring only, 1 core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
