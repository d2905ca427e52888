"""Properties of the streaming statistical detector (streams.detectors.statistical)."""

import numpy as np
import pytest

from streams.detectors.statistical import FIRE, WARMUP, SeasonalDetector

FIVE_MIN_MS = 300_000
DAY = 288  # points per day at 5-minute sampling


def daily_series(days: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A daily cycle with mild noise: the normal behaviour of, e.g., traffic counts."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    values = 100 + 40 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 2, t.size)
    return t * FIVE_MIN_MS, values


def run(ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    return SeasonalDetector().score(np.zeros(values.size, dtype=np.int64), ts, values)


def test_scores_are_in_unit_interval() -> None:
    scores = run(*daily_series(5))
    assert np.all((scores >= 0) & (scores <= 1))


def test_score_of_a_point_ignores_later_points() -> None:
    ts, values = daily_series(4)
    full = run(ts, values)
    for n in (1, 150, 700):
        np.testing.assert_array_equal(run(ts[:n], values[:n]), full[:n])


@pytest.mark.parametrize("n_entities", [1, 40])  # the one-entity float path and the vectorised path
def test_a_changed_future_leaves_earlier_scores_unchanged(n_entities: int) -> None:
    # Truncation alone would miss a detector that looks ahead within a batch, so the future is
    # rewritten instead: huge spikes, a level shift and a new range after `cut`.
    ts, values = daily_series(3)
    cut = 500
    future = values.copy()
    future[cut:] = future[cut:] * 3 + 1000
    future[cut::37] += 1e6
    entity = np.repeat(np.arange(n_entities), values.size)
    scores = [SeasonalDetector().score(entity, np.tile(ts, n_entities), np.tile(v, n_entities)) for v in (values, future)]
    np.testing.assert_array_equal(scores[0].reshape(n_entities, -1)[:, :cut], scores[1].reshape(n_entities, -1)[:, :cut])
    assert np.any(scores[1].reshape(n_entities, -1)[:, cut:] > FIRE)  # the rewritten future does register


def test_point_by_point_equals_one_batch() -> None:
    ts, values = daily_series(2)
    detector = SeasonalDetector()
    one_by_one = [detector.score(np.array([0]), ts[i : i + 1], values[i : i + 1])[0] for i in range(values.size)]
    np.testing.assert_array_equal(one_by_one, run(ts, values))


def test_spike_in_a_seasonal_series_scores_high_and_the_cycle_low() -> None:
    ts, values = daily_series(10)
    spike = 8 * DAY + DAY // 2  # where the cycle crosses its mean: only the daily baseline exposes it
    values[spike] += 30
    scores = run(ts, values)
    assert scores[spike] > FIRE  # an alert
    normal = np.delete(scores, spike)[2 * DAY :]  # the first days teach the cycle
    # Only the odd new extreme of the noise may alert: under one point in a thousand.
    assert np.mean(normal >= FIRE) < 1e-3
    assert np.median(normal) == 0.0


def test_entities_scored_together_equal_entities_scored_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    n_entities, per_entity = 24, 400
    series = [daily_series(2, seed=e) for e in range(n_entities)]
    for e, (_, values) in enumerate(series):
        values *= 1 + e  # different scales per entity
        values[rng.integers(WARMUP, values.size)] += 500
    alone = [run(ts[:per_entity], values[:per_entity]) for ts, values in series]

    # Interleave in a shuffled but per-entity ordered way, as a message stream would.
    entity = rng.permutation(np.repeat(np.arange(n_entities), per_entity))
    position = np.zeros(entity.size, dtype=np.int64)
    for e in range(n_entities):
        position[entity == e] = np.arange(per_entity)
    ts = np.array([series[e][0][p] for e, p in zip(entity, position)])
    values = np.array([series[e][1][p] for e, p in zip(entity, position)])

    detector, together = SeasonalDetector(), np.empty(entity.size)
    vectorised_calls = []
    advance = detector._advance_entities
    monkeypatch.setattr(detector, "_advance_entities", lambda *a: vectorised_calls.append(1) or advance(*a))
    for batch in np.array_split(np.arange(entity.size), 7):
        together[batch] = detector.score(entity[batch], ts[batch], values[batch])
    for e in range(n_entities):
        np.testing.assert_allclose(together[entity == e], alone[e], rtol=1e-12, atol=1e-12)
    assert vectorised_calls  # the batches really went through the across-entity path


def test_new_entities_grow_the_state_without_touching_old_ones() -> None:
    detector = SeasonalDetector()
    ts, values = daily_series(1)
    detector.score(np.zeros(values.size, dtype=np.int64), ts, values)
    before = detector.state[0].copy()
    detector.score(np.array([5]), ts[:1], values[:1])
    assert detector.n_entities == 6
    np.testing.assert_array_equal(detector.state[0], before)


@pytest.mark.parametrize("days", [1, 20])
def test_memory_does_not_grow_with_the_number_of_points(days: int) -> None:
    detector = SeasonalDetector()
    ts, values = daily_series(days)
    detector.score(np.zeros(values.size, dtype=np.int64), ts, values)
    after_one_point = SeasonalDetector()
    after_one_point.score(np.array([0]), ts[:1], values[:1])
    assert detector.state.nbytes == after_one_point.state.nbytes
    assert detector.seasonal.nbytes == after_one_point.seasonal.nbytes
    assert detector.contexts.nbytes == after_one_point.contexts.nbytes
    assert detector.hist.nbytes == after_one_point.hist.nbytes


def test_a_new_pattern_inside_the_range_scores_high() -> None:
    # A square wave alternating between two levels; then values sit at a level in between, never seen
    # before but inside the seen range, so only the contextual novelty can flag them.
    t = np.arange(3000)
    values = np.where((t // 50) % 2 == 0, 0.0, 10.0)
    values[2500:2600] = 5.0
    scores = run(t * FIVE_MIN_MS, values)
    assert scores[2500:2510].max() > FIRE
    assert scores[1000:2500].max() < FIRE
