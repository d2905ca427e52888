"""What the outlook costs a city (streams/outlook.py): every device series forecast in the workers.

    python -m benchmarks.outlook [--rate 1000] [--minutes 60] [--partitions 8] [--out FILE]

The simulator's city sized for `--rate` events/s (services/city.py `City.sized_for`),
its devices spread over `--partitions` partitions as a keyed producer spreads them, and
`--minutes` of closed windows of each (one record per domain, partition and minute, as
the domain workers publish them) fed to each partition's `Outlook`. Measured: its state
per series (as stored), the time to add a minute of the whole city's windows (learning
and forecasting included; the records' JSON parse timed apart), and what it publishes
each 5-minute step and in the forecast agent's snapshots, also per byte of the city's
input (129 bytes an event on average).
The figures are synthetic windows, not a model's accuracy: that is benchmarks.forecast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson

from services.city import City
from streams.forecast_agent import SNAPSHOT_EVERY_S
from streams.outlook import STEP_MS, Outlook, encode
from streams.partitioning import partition_for

MINUTE_MS = 60_000
T0 = 1_793_462_400_000  # a local midnight
EVENT_BYTES = 129  # the simulator's events on average (benchmarks/README.md, broker writes)


def window_cols(domain: str, rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """A closed window record's columns for `rows` devices, as the domain worker writes them."""
    def field(mean: float, count: int) -> dict[str, list[Any]]:
        v = rng.normal(mean, 0.05 * mean, rows)
        return {"count": [count] * rows, "sum": (v * count).tolist(), "m2": [0.0] * rows, "min": v.tolist(),
                "max": v.tolist()}
    if domain == "gate":
        passes = rng.poisson(3, rows).tolist()
        return {"n": passes, "f": {"temperature_c": field(36.5, 3)}, "c": {"passes": passes}}
    if domain == "traffic":
        return {"n": [1] * rows, "f": {"volume": field(20, 1), "speed_kmh": field(40, 1), "occupancy": field(0.2, 1)},
                "c": {}}
    return {"n": [6] * rows, "f": {"load_kw": field(3000, 6), "voltage_kv": field(10.1, 6),
                                   "frequency_hz": field(50, 6)}, "c": {}}


def measure(rate: float, minutes: int, partitions: int) -> dict[str, Any]:
    city = City.sized_for(rate)
    rng = np.random.default_rng(0)
    placed: dict[tuple[str, int], list[str]] = {}
    for e in city.entities:
        placed.setdefault((e["domain"], partition_for(e["id"], partitions)), []).append(e["id"])
    outlooks = {p: Outlook(MINUTE_MS) for p in range(partitions)}
    records = {key: orjson.dumps({"cols": window_cols(key[0], len(ids), rng)}) for key, ids in placed.items()}
    adding = parsing = 0.0
    published = published_records = 0
    for m in range(minutes):
        for (domain, p), ids in placed.items():
            began = time.perf_counter()
            cols = orjson.loads(records[domain, p])["cols"]
            parsed = time.perf_counter()
            learnt = outlooks[p].add(domain, T0 + m * MINUTE_MS, ids, cols)
            out = outlooks[p].records(p, learnt) if learnt is not None else []
            adding += time.perf_counter() - parsed
            parsing += parsed - began
            published += sum(len(v) for _, v in out)
            published_records += len(out)
    series = sum(len(d.series) for o in outlooks.values() for d in o.domains.values())
    state = sum(len(encode(o)) for o in outlooks.values())
    steps = minutes * MINUTE_MS // STEP_MS
    input_bytes_per_s = rate * EVENT_BYTES  # the city is sized for `rate` events/s over a day
    return {"rate": rate, "devices": len(city.entities), "series": series, "partitions": partitions,
            "state_bytes": state, "state_bytes_per_series": round(state / series),
            "ms_per_minute_of_windows": round(adding / minutes * 1000, 1),
            "parse_ms_per_minute_of_windows": round(parsing / minutes * 1000, 1),
            "published_bytes_per_step": round(published / steps), "published_records_per_step": round(
                published_records / steps), "published_bytes_per_series": round(published / steps / series),
            "published_bytes_per_input_byte": round(published / steps / (STEP_MS / 1000) / input_bytes_per_s, 3),
            "snapshot_every_s": SNAPSHOT_EVERY_S,
            "snapshot_bytes_per_input_byte": round(state / SNAPSHOT_EVERY_S / input_bytes_per_s, 3)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outlook", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="the city's events/s (default 1000)")
    parser.add_argument("--minutes", type=int, default=60, help="minutes of windows fed (default 60)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--out", type=Path, help="JSON results file")
    args = parser.parse_args(argv)
    r = measure(args.rate, args.minutes, args.partitions)
    if args.out:
        args.out.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    print(f"city for {r['rate']:,.0f} events/s: {r['devices']:,} devices, {r['series']:,} series on "
          f"{r['partitions']} partitions\n"
          f"state {r['state_bytes'] / 1e6:.1f} MB ({r['state_bytes_per_series']:,} bytes a series)\n"
          f"a minute of the city's windows: {r['ms_per_minute_of_windows']} ms to learn and forecast, "
          f"{r['parse_ms_per_minute_of_windows']} ms to parse (one core)\n"
          f"published each 5-minute step: {r['published_bytes_per_step'] / 1e6:.2f} MB in "
          f"{r['published_records_per_step']} records ({r['published_bytes_per_series']} bytes a series): "
          f"{r['published_bytes_per_input_byte']} bytes per input byte; snapshots every "
          f"{r['snapshot_every_s'] / 3600:g} h {r['snapshot_bytes_per_input_byte']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
