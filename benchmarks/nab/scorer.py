"""NAB scoring, reimplemented from the description in the NAB data README.

The scorer is split so that the expensive part is done once per file and the
threshold search is a single sort over the whole corpus: every scored row is
turned into the change it makes to the corpus score when the threshold drops
to its anomaly score, and the best threshold is an argmax over a cumulative sum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
NO_DETECTION_THRESHOLD = 1.1  # above every score in [0, 1]: the detector never fires

Window = tuple[int, int]  # inclusive row indices [left, right]


@dataclass(frozen=True)
class Profile:
    """Weights of one NAB cost profile."""

    tp: float
    fp: float
    fn: float


@dataclass(frozen=True)
class CorpusScore:
    """Result of the corpus-wide threshold search for one profile."""

    threshold: float
    raw: float
    null: float
    perfect: float
    windows: int

    @property
    def normalised(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def load_profiles(nab_root: Path) -> dict[str, Profile]:
    """Read the profiles from the NAB root so that a changed config is honoured."""
    config = json.loads((Path(nab_root) / "config" / "profiles.json").read_text())
    return {
        name: Profile(
            tp=float(config[name]["CostMatrix"]["tpWeight"]),
            fp=float(config[name]["CostMatrix"]["fpWeight"]),
            fn=float(config[name]["CostMatrix"]["fnWeight"]),
        )
        for name in PROFILE_NAMES
    }


def probation_rows(n_rows: int) -> int:
    """Rows at the start of a file that detectors may learn from but are not scored on."""
    return min(int(np.floor(0.15 * n_rows)), 750)


def scaled_sigmoid(y: np.ndarray) -> np.ndarray:
    """NAB's reward curve: +1 far before a window end, 0 at it, -1 far after."""
    y = np.asarray(y, dtype=float)
    with np.errstate(over="ignore"):
        return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0)


def row_rewards(n_rows: int, windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted reward of a detection at each row, and the window each row lies in.

    Rewards are in units of the profile weights: inside a window they multiply
    A_TP (1 for a detection at the left edge), outside they multiply A_FP
    (-1 far from any preceding window). Window id is -1 outside windows.
    """
    rows = np.arange(n_rows)
    reward = np.full(n_rows, -1.0)  # before the first window: a plain false positive
    window_id = np.full(n_rows, -1)
    max_tp = float(scaled_sigmoid(-1.0))
    for k, (left, right) in enumerate(sorted(windows)):
        width = right - left + 1
        inside = rows[left : right + 1]
        reward[left : right + 1] = scaled_sigmoid(-(right - inside + 1) / width) / max_tp
        window_id[left : right + 1] = k
        after = rows[right + 1 :]
        # A one-row window has no tail; every later row is then a plain false positive.
        distance = (after - right) / (width - 1) if width > 1 else np.full(after.size, np.inf)
        reward[right + 1 :] = scaled_sigmoid(distance)
    return reward, window_id


def threshold_deltas(
    scores: np.ndarray, windows: Sequence[Window], profile: Profile
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per scored row, the raw-score change when the threshold reaches its score.

    A false positive simply adds its weighted reward. A window is worth its best
    (earliest) detection, which is a running maximum over its rows taken in
    order of decreasing score; each row contributes the increase of that maximum
    over the -A_FN a missed window costs. Returns (scores, deltas, windows
    counted), restricted to rows after probation; windows lying wholly inside
    probation are not counted, as no detection could ever reach them.
    """
    scores = np.asarray(scores, dtype=float)
    start = probation_rows(scores.size)
    reward, window_id = row_rewards(scores.size, windows)
    scores, reward, window_id = scores[start:], reward[start:], window_id[start:]

    deltas = np.where(window_id < 0, profile.fp * reward, 0.0)
    counted = 0
    for k in np.unique(window_id[window_id >= 0]):
        rows = np.flatnonzero(window_id == k)
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        best = np.maximum.accumulate(np.maximum(profile.tp * reward[rows], -profile.fn))
        deltas[rows] = np.diff(best, prepend=-profile.fn)
        counted += 1
    return scores, deltas, counted


def best_threshold(scores: np.ndarray, deltas: np.ndarray, base: float) -> tuple[float, float]:
    """Threshold maximising base + sum(deltas[scores >= T]) over {1.1} and all scores.

    Candidates are visited from the highest threshold down and argmax keeps the
    first maximum, so ties go to the higher threshold as NAB specifies.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    totals = base + np.cumsum(deltas[order])
    # The score at threshold T includes every row with score >= T: the last row of each tie group.
    last_of_group = np.flatnonzero(np.diff(sorted_scores, append=-np.inf) != 0)
    thresholds = np.concatenate(([NO_DETECTION_THRESHOLD], sorted_scores[last_of_group]))
    values = np.concatenate(([base], totals[last_of_group]))
    best = int(np.argmax(values))
    return float(thresholds[best]), float(values[best])


def score_corpus(
    files: Sequence[tuple[np.ndarray, Sequence[Window]]], profile: Profile
) -> CorpusScore:
    """Score (anomaly scores, windows) pairs with one corpus-wide threshold."""
    parts = [threshold_deltas(scores, windows, profile) for scores, windows in files]
    windows = sum(counted for _, _, counted in parts)
    null = -profile.fn * windows
    threshold, raw = best_threshold(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), null
    )
    return CorpusScore(threshold, raw, null, profile.tp * windows, windows)
