"""The simulator's city as NAB-layout series, for `benchmarks.forecast` (issue 19, item 5).

    python -m benchmarks.city_series --out DIR [--rate 5] [--days 3] [--seed 7]
    python -m benchmarks.forecast --data DIR --out FILE [--outlook smooth|counts]

Runs the simulator (services/simulator.py, without injected anomalies) over `--days` of
event time, from a local midnight, for the city sized for `--rate` events/s, and writes
one `timestamp,value` CSV per device and figure, in 5-minute steps as the outlook learns
them, under DIR/data/<domain>/: a gate's passes and a detector's volume (sums over the
step), its speed and occupancy and a feeder's load (means over the step's readings). A
step without a reading is left out, as a gap.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from services.city import City
from services.simulator import Simulator

STEP_S = 300
START = datetime(2026, 11, 1, 16, 0, tzinfo=timezone.utc)  # 2026-11-02 00:00 in China Standard Time
# (domain, event type, figure, the event's field or None to count events, summed or averaged)
FIGURES = (("gate", "gate.pass", "passes", None, True), ("traffic", "traffic.flow", "volume", "volume", True),
           ("traffic", "traffic.flow", "speed_kmh_mean", "speed_kmh", False),
           ("traffic", "traffic.flow", "occupancy_mean", "occupancy", False),
           ("grid", "grid.measurement", "load_kw_mean", "load_kw", False))
ID_FIELD = {"gate": "gate_id", "traffic": "sensor_id", "grid": "feeder_id"}


def simulate(rate: float, days: int, seed: int) -> dict[tuple[str, str], np.ndarray]:
    """(figure, device) → its value per step (NaN where it had no reading)."""
    city = City.sized_for(rate, seed)
    steps = days * 86_400 // STEP_S
    index = {e["id"]: i for d in ("gate", "traffic", "grid") for i, e in enumerate(city.of(d))}
    sums = {f[2]: np.zeros((len(city.of(f[0])), steps)) for f in FIGURES}
    counts = {f[2]: np.zeros((len(city.of(f[0])), steps)) for f in FIGURES}
    start = int(START.timestamp())
    sim = Simulator(city, start, start + days * 86_400, seed, anomaly_every_s=None)
    for t in range(start, start + days * 86_400):
        step = (t - start) // STEP_S
        for domain, events in sim.tick(t).events.items():
            for ev in events:
                for d, kind, figure, field, _ in FIGURES:
                    if d == domain and ev["type"] == kind:
                        i = index[ev[ID_FIELD[domain]]]
                        sums[figure][i, step] += 1 if field is None else ev[field]
                        counts[figure][i, step] += 1
    out = {}
    for domain, _, figure, field, summed in FIGURES:
        with np.errstate(invalid="ignore", divide="ignore"):
            values = sums[figure] if summed else sums[figure] / counts[figure]
        if field is not None:
            values = np.where(counts[figure] > 0, values, np.nan)
        for e, row in zip(city.of(domain), values):
            out[figure, e["id"]] = row
    return out


def write(series: dict[tuple[str, str], np.ndarray], root: Path) -> int:
    start = np.datetime64(START.replace(tzinfo=None), "s")
    written = 0
    for (figure, device), values in series.items():
        domain = next(f[0] for f in FIGURES if f[2] == figure)
        folder = root / "data" / domain
        folder.mkdir(parents=True, exist_ok=True)
        stamps = start + np.arange(values.size) * np.timedelta64(STEP_S, "s")
        lines = [f"{str(s).replace('T', ' ')},{v:.6g}" for s, v in zip(stamps, values) if np.isfinite(v)]
        (folder / f"{device}_{figure}.csv").write_text("timestamp,value\n" + "\n".join(lines) + "\n")
        written += 1
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.city_series", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write data/<domain>/*.csv under")
    parser.add_argument("--rate", type=float, default=5.0, help="the city's size, in events/s (default 5)")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    n = write(simulate(args.rate, args.days, args.seed), args.out)
    print(f"{n} series of {args.days} days in 5-minute steps under {args.out / 'data'} "
          f"({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
