"""Properties of the online forecaster (streams.forecast), broker-free."""

import numpy as np
import orjson
import pytest

from streams.forecast import Config, Forecaster

STEP_MS = 300_000
DAY = 288  # steps per day at 5-minute steps
CONFIG = Config(step_ms=STEP_MS, horizon=12, profile_bins=DAY)


def daily(days: float, noise: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A clean daily rhythm (traffic-like: quiet nights, busy days) with Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(days * DAY))
    values = 100 + 50 * np.sin(2 * np.pi * t / DAY) + 20 * np.sin(4 * np.pi * t / DAY) + rng.normal(0, noise, t.size)
    return t * STEP_MS, values


def walk(model: Forecaster, slot: int, ts: np.ndarray, values: np.ndarray, k: int = 12) -> np.ndarray:
    """Learn point by point; the forecast means after each point, shape (points, k)."""
    out = []
    for t, v in zip(ts, values):
        model.learn(np.array([slot]), np.array([t]), np.array([v]))
        out.append(model.forecast(np.array([slot]), k).mean[0])
    return np.array(out)


def test_a_rewritten_future_leaves_earlier_forecasts_and_scores_unchanged() -> None:
    ts, values = daily(2.5)
    cut = 500
    future = values.copy()
    future[cut:] = future[cut:] * 5 + 1000 * (np.arange(future.size - cut) % 7 == 0)  # spikes and a shift
    a, b = Forecaster(CONFIG), Forecaster(CONFIG)
    np.testing.assert_array_equal(walk(a, 0, ts, values)[:cut], walk(b, 0, ts, future)[:cut])
    # Scores handed over as one batch: the model must not read ahead inside a batch either.
    slots = np.zeros(ts.size, np.int64)
    np.testing.assert_array_equal(Forecaster(CONFIG).learn(slots, ts, values)[:cut],
                                  Forecaster(CONFIG).learn(slots, ts, future)[:cut])


def test_a_clean_daily_rhythm_is_forecast_tightly_after_two_days() -> None:
    ts, values = daily(3, noise=1.0)
    model = Forecaster(CONFIG)
    learnt = 2 * DAY
    model.learn(np.zeros(learnt, np.int64), ts[:learnt], values[:learnt])
    fc = model.forecast(np.array([0]), 12)
    error = np.abs(fc.mean[0] - values[learnt:learnt + 12])
    assert error.mean() < 0.1 * values.std()  # the rhythm swings ±70 around 100; noise σ is 1
    np.testing.assert_array_equal(fc.step[0], ts[learnt:learnt + 12] // STEP_MS)
    assert np.all(fc.low[0] < fc.mean[0]) and np.all(fc.mean[0] < fc.high[0])


def test_intervals_widen_with_noise_and_cover_about_their_share() -> None:
    quiet, noisy = daily(6, noise=1.0, seed=1), daily(6, noise=8.0, seed=2)
    model = Forecaster(CONFIG)
    inside = {0: [], 1: []}
    for slot, (ts, values) in enumerate((quiet, noisy)):
        for i in range(ts.size - 1):
            model.learn(np.array([slot]), ts[i:i + 1], values[i:i + 1])
            if i >= 3 * DAY:
                fc = model.forecast(np.array([slot]), 1)
                inside[slot].append(fc.low[0, 0] <= values[i + 1] <= fc.high[0, 0])
    fc = model.forecast(np.array([0, 1]), 12)
    width = (fc.high - fc.low).mean(axis=1)
    assert width[1] > 4 * width[0]
    for slot in (0, 1):
        assert 0.7 < np.mean(inside[slot]) < 0.9


def test_encode_decode_round_trips_exactly_mid_stream() -> None:
    ts, values = daily(2)
    slots = np.arange(ts.size) % 3  # three series interleaved
    half = ts.size // 2
    straight = Forecaster(CONFIG)
    straight.learn(slots[:half], ts[:half], values[:half])
    restored = Forecaster.decode(straight.encode())
    assert restored.config == straight.config
    scores_a = straight.learn(slots[half:], ts[half:], values[half:])
    scores_b = restored.learn(slots[half:], ts[half:], values[half:])
    np.testing.assert_array_equal(scores_a, scores_b)
    fa, fb = straight.forecast(np.arange(3), 12), restored.forecast(np.arange(3), 12)
    for x, y in ((fa.mean, fb.mean), (fa.low, fb.low), (fa.high, fb.high)):
        np.testing.assert_array_equal(x, y)
    assert straight.encode() == restored.encode()


def test_slots_are_independent() -> None:
    ts, values = daily(2, seed=3)
    _, other = daily(2, noise=30.0, seed=4)
    alone = Forecaster(CONFIG)
    alone.learn(np.zeros(ts.size, np.int64), ts, values)
    together = Forecaster(CONFIG)
    both_ts = np.repeat(ts, 2)
    both_values = np.column_stack([values, other * 3]).ravel()
    together.learn(np.tile([0, 1], ts.size), both_ts, both_values)
    for x, y in zip(alone.forecast(np.array([0]), 12).__dict__.values(),
                    together.forecast(np.array([0]), 12).__dict__.values()):
        np.testing.assert_array_equal(x, y)


def test_score_is_learn_without_learning_and_flags_a_spike() -> None:
    ts, values = daily(2)
    model = Forecaster(CONFIG)
    model.learn(np.zeros(ts.size - 1, np.int64), ts[:-1], values[:-1])
    before = model.encode()
    normal = model.score(np.array([0]), ts[-1:], values[-1:])
    spike = model.score(np.array([0]), ts[-1:], values[-1:] + 300)
    assert model.encode() == before
    assert normal[0] < 0.3 < 0.99 <= spike[0] <= 1.0
    np.testing.assert_allclose(model.learn(np.array([0]), ts[-1:], values[-1:]), normal, rtol=1e-12)


def test_bad_and_late_points_are_skipped() -> None:
    ts, values = daily(1)
    model = Forecaster(CONFIG)
    model.learn(np.zeros(100, np.int64), ts[:100], values[:100])
    state = model.encode()
    scores = model.learn(np.zeros(3, np.int64), np.array([ts[50], ts[99], ts[100]]),
                         np.array([1.0, 2.0, np.nan]))
    np.testing.assert_array_equal(scores, 0.0)
    assert model.encode() == state


def test_the_forecast_benchmark_writes_the_contracts_figures(tmp_path, capsys) -> None:
    from benchmarks.forecast import main

    ts, values = daily(6, noise=2.0)
    stamps = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="s")
    for name in ("a", "b"):
        path = tmp_path / "data" / "kind" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("timestamp,value\n" + "".join(f"{t.replace('T', ' ')},{v}\n" for t, v in zip(stamps, values)))
    (tmp_path / "data" / "kind" / "broken.csv").write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,lots\n")
    out = tmp_path / "forecast.json"
    assert main(["--data", str(tmp_path), "--out", str(out)]) == 0
    result = orjson.loads(out.read_bytes())
    assert result["files"] == 2 and result["points"] == 2 * values.size and result["points_per_s"] > 0
    assert set(result["horizons"]) == {"1", "3", "12"}
    for figures in result["horizons"].values():
        assert figures["mase_seasonal"] < 0.9 and 0.6 < figures["coverage80"] < 0.95
        assert figures["mase_last"] < 1.0
    assert result["daily"]["files"] == ["kind/a.csv", "kind/b.csv"]
    assert result["worker_shape"]["learn_points_per_s"] > 0
    assert "broken.csv: not timestamp,value rows" in capsys.readouterr().err


def test_a_weekly_rhythm_is_learnt_where_it_helps() -> None:
    # Hourly traffic whose weekends (two days in seven) run at half the weekday's.
    hour, hours = 3_600_000, 24
    t = np.arange(35 * hours)
    ts = t * hour
    values = 100 + 50 * np.sin(2 * np.pi * t / hours) + np.random.default_rng(5).normal(0, 1, t.size)
    weekend = (ts // 86_400_000) % 7 >= 5
    values = np.where(weekend, values * 0.5, values)
    model = Forecaster(Config(step_ms=hour, horizon=12, profile_bins=hours))
    learnt = 33 * hours  # up to midnight starting day 33, a weekend day after a weekday
    model.learn(np.zeros(learnt, np.int64), ts[:learnt], values[:learnt])
    fc = model.forecast(np.array([0]), 12)
    target = values[learnt:learnt + 12]
    assert weekend[learnt] and not weekend[learnt - hours]
    yesterday = values[learnt - hours:learnt - hours + 12]
    assert np.abs(fc.mean[0] - target).mean() < np.abs(yesterday - target).mean() / 3


def test_a_slot_never_learnt_is_forecast_as_unknown_and_scores_nothing() -> None:
    model = Forecaster(CONFIG)
    fc = model.forecast(np.array([4]), 3)
    assert np.isnan(fc.mean).all() and np.isnan(fc.low).all()
    np.testing.assert_array_equal(model.score(np.array([7]), np.array([0]), np.array([1.0])), 0.0)


def test_a_bad_config_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="the step must divide a day"):
        Config(step_ms=7_000)


def test_with_a_quick_trend_a_load_ramp_is_forecast_to_pass_its_rating_ahead_of_time() -> None:
    # A feeder at 0.4 to 0.8 of its rating, one value a minute, then a ramp to 1.2 over an hour.
    minute, day = 60_000, 1440
    t = np.arange(4 * day)
    load = 0.6 + 0.2 * np.sin(2 * np.pi * t / day) + np.random.default_rng(6).normal(0, 0.005, t.size)
    start = 3 * day + 600
    load[start:start + 60] = np.linspace(load[start], 1.2, 60)
    passes = start + int(np.argmax(load[start:] > 1.0))
    model = Forecaster(Config(step_ms=minute, horizon=60, trend_rate=0.03, trend_damping=0.97))
    model.learn(np.zeros(start, np.int64), t[:start] * minute, load[:start])
    assert not (model.forecast(np.array([0]), 60).low > 1.0).any()
    for i in range(start, passes):
        model.learn(np.array([0]), t[i:i + 1] * minute, load[i:i + 1])
        if (model.forecast(np.array([0]), 60).low > 1.0).any():
            break
    assert passes - i >= 10  # minutes of warning, with the interval's low bound past the rating
