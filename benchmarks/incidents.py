"""What grouping costs when a district goes dark (streams/incidents.py).

    python -m benchmarks.incidents [--devices 1000 10000 30000] [--no-feeder]

N devices of one district go offline 10 ms apart (event time), each powered by a feeder
of its own six (or, with --no-feeder, by none: a network outage), in 2,000 grid cells, with
no feeder alert: each is held back `hold_s`, then grouped into its grid cell's area
incident. Every alert state is folded into the district's one grouping state, as the
incident agent does. Printed: microseconds per input (one core) and the state's size as
JSON, which the agent writes to its table once per batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import orjson

from streams.incidents import Grouping, apply

T0 = 1_763_683_200_000


def offline(i: int, feeder: str | None) -> dict:
    t = T0 + i * 10
    return {"id": f"gate.offline|G-{i}|{t}", "rule": "gate.offline", "entity": f"G-{i}", "severity": "major",
            "status": "firing", "seq": 1, "feeder": feeder, "started": t, "updated": t, "resolved": None,
            "area": {"district": "D1", "street": f"S{i % 20}", "community": f"C{i % 200}", "grid_cell": f"G{i % 2000}"}}


def measure(devices: int, feeders: bool) -> dict[str, float]:
    state, grouping = None, Grouping()
    began = time.perf_counter()
    for i in range(devices):
        state, _ = apply(state, offline(i, f"F-{i // 6}" if feeders else None), grouping)
    spent = time.perf_counter() - began
    return {"devices": devices, "us_per_input": round(spent / devices * 1e6, 1), "seconds": round(spent, 2),
            "state_mb": round(len(orjson.dumps(state)) / 1e6, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.incidents", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1_000, 10_000, 30_000])
    parser.add_argument("--no-feeder", action="store_true", help="devices with no feeder in the registry")
    args = parser.parse_args(argv)
    for n in args.devices:
        r = measure(n, not args.no_feeder)
        print(f"{r['devices']:,} devices offline in one district: {r['us_per_input']} µs an input "
              f"({r['seconds']} s in all), state {r['state_mb']} MB as JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
