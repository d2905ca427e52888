"""Hand-computable cases for the NAB scorer, and an end-to-end run of the NAB CLI.

Most cases use one file of 100 rows: probation is floor(0.15 * 100) = 15 rows,
and one window covers rows 40..59 (width 20). scaledSigmoid(y) equals
-tanh(2.5 y) for y <= 3, which gives the expected values in closed form.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.nab.__main__ import main
from benchmarks.nab.scorer import (
    NO_DETECTION_THRESHOLD,
    Profile,
    best_threshold,
    probation_rows,
    scaled_sigmoid,
    score_corpus,
)

STANDARD = Profile(tp=1.0, fp=0.11, fn=1.0)
LOW_FN = Profile(tp=1.0, fp=0.11, fn=2.0)
N, WINDOW = 100, (40, 59)
MAX_TP = math.tanh(2.5)  # scaledSigmoid(-1)


def detections(*rows: int, n: int = N) -> np.ndarray:
    scores = np.zeros(n)
    scores[list(rows)] = 1.0
    return scores


def raw_score(scores: np.ndarray, windows=(WINDOW,), profile: Profile = STANDARD) -> float:
    return score_corpus([(scores, list(windows))], profile).raw


def test_probation_length() -> None:
    assert probation_rows(100) == 15
    assert probation_rows(4032) == 604
    assert probation_rows(22695) == 750


def test_scaled_sigmoid() -> None:
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-1.0) == pytest.approx(MAX_TP)
    assert scaled_sigmoid(3.5) == -1.0


def test_detection_at_window_start_scores_a_full_tp() -> None:
    assert raw_score(detections(40)) == pytest.approx(1.0)


def test_late_detection_is_worth_little() -> None:
    # Last row of the window: position -(59 - 59 + 1) / 20.
    assert raw_score(detections(59)) == pytest.approx(math.tanh(2.5 / 20) / MAX_TP)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    assert raw_score(detections(50, 45, 59)) == pytest.approx(math.tanh(2.5 * 15 / 20) / MAX_TP)


def test_missed_window_costs_fn_and_the_null_threshold_wins() -> None:
    result = score_corpus([(np.zeros(N), [WINDOW])], LOW_FN)
    assert result.threshold == NO_DETECTION_THRESHOLD
    assert result.raw == pytest.approx(-2.0)
    assert result.normalised == pytest.approx(0.0)


def test_false_positive_before_the_first_window_costs_a_full_fp() -> None:
    assert raw_score(detections(20, 40)) == pytest.approx(1.0 - 0.11)


def test_false_positive_after_a_window_is_discounted_by_distance() -> None:
    just_after, far_after = 60, 59 + 19  # distances 1/19 and 1 window widths
    assert raw_score(detections(40, just_after)) == pytest.approx(1.0 - 0.11 * math.tanh(2.5 / 19))
    assert raw_score(detections(40, far_after)) == pytest.approx(1.0 - 0.11 * math.tanh(2.5))


def test_rows_in_probation_are_not_scored() -> None:
    assert raw_score(detections(3, 14, 40)) == pytest.approx(1.0)
    assert raw_score(detections(15, 40)) == pytest.approx(1.0 - 0.11)


def test_window_inside_probation_is_not_counted() -> None:
    result = score_corpus([(np.zeros(N), [(2, 8), WINDOW])], STANDARD)
    assert result.windows == 1


def test_threshold_ties_go_to_the_higher_threshold() -> None:
    # Lowering T from 0.9 to 0.5 adds a later detection in the same window: same score.
    scores = np.zeros(N)
    scores[40], scores[45] = 0.9, 0.5
    result = score_corpus([(scores, [WINDOW])], STANDARD)
    assert result.threshold == 0.9
    assert result.raw == pytest.approx(1.0)


def test_best_threshold_keeps_every_row_of_a_tie_group() -> None:
    # Both rows scoring 0.5 are detections at T = 0.5: 0.5 is worth 1 - 1 = 0, below 0.9's 1.
    threshold, value = best_threshold(np.array([0.9, 0.5, 0.5]), np.array([1.0, 1.0, -1.0]), 0.0)
    assert (threshold, value) == (0.9, 1.0)


def test_one_threshold_serves_the_whole_corpus() -> None:
    # File b alone would prefer T = 0.3, but that adds an FP in file a costing more than it gains.
    a, b = np.zeros(N), np.zeros(N)
    a[40], a[15:35] = 0.8, 0.3
    b[50] = 0.3
    result = score_corpus([(a, [WINDOW]), (b, [WINDOW])], STANDARD)
    tp_b = math.tanh(2.5 * 10 / 20) / MAX_TP
    assert result.threshold == 0.8
    assert result.raw == pytest.approx(1.0 - 1.0)
    assert 1.0 + tp_b - 20 * 0.11 < result.raw


@pytest.mark.parametrize("profile", [STANDARD, Profile(1.0, 0.22, 1.0), LOW_FN])
def test_null_and_perfect_detectors_normalise_to_0_and_100(profile: Profile) -> None:
    windows = [(20, 29), (60, 69)]
    null = score_corpus([(np.zeros(N), windows), (np.zeros(N), [])], profile)
    perfect = score_corpus([(detections(20, 60), windows), (np.zeros(N), [])], profile)
    assert null.normalised == pytest.approx(0.0)
    assert perfect.normalised == pytest.approx(100.0)


# End-to-end: `python -m benchmarks.nab` on a tiny NAB layout built in tmp_path.
PROFILES = {
    name: {"CostMatrix": {"tpWeight": 1.0, "fnWeight": fn, "fpWeight": fp, "tnWeight": 1.0}}
    for name, fp, fn in [("standard", 0.11, 1.0), ("reward_low_FP_rate", 0.22, 1.0), ("reward_low_FN_rate", 0.11, 2.0)]
}


def write_csv(path: Path, values: np.ndarray) -> list[str]:
    stamps = [str(t).replace("T", " ") for t in np.datetime64("2024-01-01T00:00:00") + np.arange(values.size) * np.timedelta64(300, "s")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values)))
    return stamps


@pytest.fixture
def nab_root(tmp_path: Path) -> Path:
    root = tmp_path / "nab"
    rng = np.random.default_rng(0)
    spiky = 10 + rng.normal(0, 1, 600)
    spiky[450] = 40
    stamps = write_csv(root / "data" / "catA" / "spiky.csv", spiky)
    write_csv(root / "data" / "catB" / "quiet.csv", 5 + rng.normal(0, 1, 300))
    labels = {"catA/spiky.csv": [[stamps[430] + ".000000", stamps[470] + ".000000"]], "catB/quiet.csv": []}
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_text(json.dumps(PROFILES))
    return root


def test_cli_writes_nab_results_and_scores(nab_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["--data", str(nab_root), "--out", str(out)]) == 0

    result = out / "statistical" / "catA" / "statistical_spiky.csv"
    lines = result.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score,label"
    assert len(lines) == 601
    labels = np.array([int(line.split(",")[3]) for line in lines[1:]])
    assert labels.sum() == 41 and labels[430] == labels[470] == 1
    assert (out / "statistical" / "catB" / "statistical_quiet.csv").exists()

    summary = json.loads((out / "statistical" / "scores.json").read_text())
    assert summary["files"] == 2 and summary["points"] == 900
    assert set(summary["profiles"]) == set(PROFILES)
    assert summary["profiles"]["standard"]["score"] > 50  # the lone spike is found
    assert "points/s" in capsys.readouterr().out


def test_cli_reads_the_data_root_from_the_environment(nab_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYBRAIN_NAB_DATA", str(nab_root))
    assert main(["--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "statistical" / "scores.json").exists()


def test_the_forecasters_surprise_is_scored_as_a_detector(nab_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--data", str(nab_root), "--out", str(out), "--detector", "forecast"]) == 0
    lines = (out / "forecast" / "catA" / "forecast_spiky.csv").read_text().splitlines()
    scores = np.array([float(line.split(",")[2]) for line in lines[1:]])
    assert scores[450] == scores.max() > 0.6  # the spike is its most surprising point
    summary = json.loads((out / "forecast" / "scores.json").read_text())
    assert summary["profiles"]["standard"]["score"] > 50
