"""The costs of the API's read models that the README's HTTP API section quotes, measured
on the models themselves (no broker, no HTTP): `python -m benchmarks.read_models`.

- `GET /api/v1/map`: the body for the wall screen's city of 20,000 devices;
- a forecast: learning a day of one-minute windows of one device, 60 steps ahead;
- `/api/v1/trends`: the memory two days of city shares take at the default 8 partitions.
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import replace

import numpy as np
import orjson

from api.citymap import Placements, snapshot
from api.forecasts import forecast
from api.trends import KEEP_MS, PARTS, CityTrends, Share
from services.city import build_city
from streams.registry import Registry
from streams.windows import SHAPES, Agg, FieldStats

WINDOW_MS = 60_000
PARTITIONS = 8  # services.config.Settings.partitions' default


def map_bytes() -> tuple[int, int]:
    city = build_city(7, gates=8_800, sensors=8_800, feeders=2_400)  # the wall screen test's city
    registry = Registry()
    for e in city.entities:
        registry.apply(e["id"].encode(), orjson.dumps(e))
    return len(registry), len(orjson.dumps(snapshot(Placements(registry), [])))


def forecast_ms(runs: int = 5) -> list[float]:
    rng = np.random.default_rng(1)
    windows = {}
    empty = Agg.empty(SHAPES["grid"])
    for i in range(1440):
        load = 100 + 30 * np.sin(i / 1440 * 2 * np.pi) + rng.normal()
        agg = replace(empty, events=1, fields=empty.fields | {"load_kw": FieldStats(1, load, 0.0, load, load)})
        windows[i * WINDOW_MS] = {"closed": True, "agg": agg}
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        forecast("grid", windows, "load_kw_mean", WINDOW_MS, 60)
        out.append((time.perf_counter() - start) * 1000)
    return out


def trends_mb() -> float:
    tracemalloc.start()
    trends = CityTrends(WINDOW_MS)
    for domain, parts in PARTS.items():
        for ws in range(0, KEEP_MS, WINDOW_MS):
            trends.shares[domain][ws] = {p: Share(True, tuple(float(i) for i in range(len(parts))))
                                         for p in range(PARTITIONS)}
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size / 1e6


def main() -> None:
    devices, size = map_bytes()
    print(f"GET /api/v1/map body, {devices:,} devices: {size / 1e6:.2f} MB")
    times = forecast_ms()
    print(f"forecast, 1,440 windows learnt, 60 steps: {min(times):.0f}-{max(times):.0f} ms over {len(times)} runs")
    print(f"trends, {KEEP_MS // WINDOW_MS:,} windows x {PARTITIONS} partitions x {len(PARTS)} domains: "
          f"{trends_mb():.1f} MB")


if __name__ == "__main__":
    main()
