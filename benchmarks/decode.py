"""The decode step alone: a batch record's bytes → validated columns (streams/columns.py).

    python -m benchmarks.decode [--seconds 300 --batch 100 --step 50 --repeat 5]

A simulated city sized for 1000 events/s (the throughput runs' city, the same start
time), its events as records of `--batch` events per partition, as the producer sends
them; each partition's records are decoded in steps of `--step` records (about a
fetch), with the worker's clock. Prints events/s of CPU time per repeat (minimum, median,
maximum) and a digest of every decision (the columns and the rejects), so two versions
of the code can be shown to decide alike: `PYTHONPATH=<other checkout> python
benchmarks/decode.py` runs the other checkout's decoder on the same records.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import numpy as np
import orjson

from services.city import City
from services.simulator import Batcher, generate
from streams.columns import decode
from streams.topics import DOMAINS

SIM_START = 1_795_240_800  # 2026-11-21 06:00 UTC, as benchmarks/throughput.py
NOW_MS = (SIM_START + 3600) * 1000


def records(seconds: int, batch: int, partitions: int = 8) -> dict[tuple[str, int], list[tuple[int, bytes, bytes]]]:
    """Per (domain, partition), its records as (offset, key, value)."""
    from datetime import datetime, timezone

    batcher = Batcher(batch, {d: partitions for d in DOMAINS})
    out: dict[tuple[str, int], list[tuple[int, bytes, bytes]]] = {}

    def add(rs) -> None:
        for r in rs:
            part = out.setdefault((r.domain, r.partition), [])
            part.append((len(part), r.key.encode(), orjson.dumps(r.value)))

    for tick in generate(City.sized_for(1000), datetime.fromtimestamp(SIM_START, timezone.utc), seconds,
                         anomaly_every_s=None):
        add([r for d in DOMAINS for r in batcher.add(d, tick.events[d])])
    add(batcher.drain())
    return out


def run(loads: dict[tuple[str, int], list[tuple[int, bytes, bytes]]], step: int) -> tuple[int, float, str]:
    """Events decoded, CPU seconds, and a digest of every decision."""
    digest = hashlib.sha256()
    events = 0
    spent = 0.0
    for (domain, _), recs in sorted(loads.items()):
        for i in range(0, len(recs), step):
            t0 = time.process_time()
            cols, rejected = decode(domain, recs[i:i + step], NOW_MS)
            spent += time.process_time() - t0
            events += len(cols) + len(rejected)
            for a in (cols.entity, cols.ts, cols.offset, *cols.numbers.values(), *cols.labels.values()):
                digest.update(repr(a.tolist()).encode())
            digest.update(repr([(r.offset, r.reject) for r in rejected]).encode())
    return events, spent, digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode")
    parser.add_argument("--seconds", type=int, default=300, help="simulated seconds of a 1000 events/s city")
    parser.add_argument("--batch", type=int, default=100, help="events per record")
    parser.add_argument("--step", type=int, default=50, help="records per decode call (about a fetch)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    loads = records(args.seconds, args.batch)
    rates, digests = [], set()
    for _ in range(args.repeat):
        events, spent, digest = run(loads, args.step)
        rates.append(events / spent)
        digests.add(digest)
    print(orjson.dumps({"events": events, "records": sum(map(len, loads.values())),
                        "events_per_s": {"min": round(min(rates)), "median": round(statistics.median(rates)),
                                         "max": round(max(rates))},
                        "digest": sorted(digests)}).decode())


if __name__ == "__main__":
    main()
