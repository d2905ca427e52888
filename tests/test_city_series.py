"""The simulator's city as NAB-layout series (benchmarks/city_series.py), read back as
benchmarks.forecast reads any NAB directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.city_series import simulate, write
from benchmarks.forecast import cadence, load


def test_a_day_of_the_city_becomes_five_minute_series_of_every_device_and_figure(tmp_path: Path) -> None:
    written = write(simulate(rate=1.0, days=1, seed=3), tmp_path)
    series = {s.name: s for s in load(tmp_path)}
    assert len(series) == written > 0
    figures = {name.rsplit("_", 1)[-1].removesuffix(".csv") for name in series}
    assert figures == {"passes", "volume", "mean"}  # speed_kmh_mean, occupancy_mean, load_kw_mean
    for name, s in series.items():
        assert cadence(s.ts_ms) == 300_000 and np.isfinite(s.values).all() and (s.values >= 0).all()
        if name.endswith("_passes.csv"):
            assert (s.values == np.round(s.values)).all() and s.values.size == 288  # a count every step
