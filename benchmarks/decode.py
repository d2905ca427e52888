"""The decode step alone: a batch record's bytes → validated columns (streams/columns.py).

    python -m benchmarks.decode [--seconds 300 --batch 100 --step 50 --repeat 5 --whole]

A simulated city sized for 1000 events/s (the throughput runs' city, the same start
time), its events as records of `--batch` events per partition, as the producer sends
them; each partition's records are decoded in steps of `--step` records (about a
fetch), with the worker's clock. Prints events/s of CPU time per repeat (minimum, median,
maximum) and a digest of every decision (the columns and the rejects), so two versions
of the code can be shown to decide alike: `PYTHONPATH=<other checkout> python
benchmarks/decode.py` runs the other checkout's decoder on the same records.

`--whole` times a worker's whole step instead, broker-free: each domain's
`PartitionProcessor` with its rules (decode, lateness, windows and area shares,
detection, closing), then the early-warning step on the closed windows it published;
the digest is then of the detections and closed windows of both.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import orjson

from services.city import City
from services.simulator import Batcher, generate
from streams.columns import decode
from streams.detectors import detector
from streams.early_warning import EarlyWarning
from streams.processor import PartitionProcessor, Record
from streams.registry import Registry
from streams.rules import RuleBook
from streams.state import PartitionState
from streams.topics import DOMAINS
from streams.windows import SHAPES

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


def run_whole(loads: dict[tuple[str, int], list[tuple[int, bytes, bytes]]], step: int,
              registry: Registry) -> tuple[int, float, str]:
    """Events stepped, CPU seconds, and a digest of the detections and closed windows."""
    digest = hashlib.sha256()
    rules = RuleBook()
    warning = EarlyWarning(rules, registry, 60_000)
    warned = {p: warning.new() for p in range(8)}
    processors = {d: PartitionProcessor(d, d, 8, 60_000, 120_000, registry, clock=lambda: NOW_MS / 1000,
                                        detector=detector(d, rules, registry)) for d in DOMAINS}
    events = 0
    spent = 0.0
    published = [0] * 8  # offsets of each aggregates partition
    for (domain, p), recs in sorted(loads.items()):
        state = PartitionState(SHAPES[domain])
        for i in range(0, len(recs), step):
            t0 = time.process_time()
            out = processors[domain].step(p, [Record(p, *r) for r in recs[i:i + step]], state)
            closed = []
            for kind, key, value in out.closed:
                if kind == "aggregates":
                    closed.append(Record(p, published[p], key, value))
                    published[p] += 1
            found = warning.step(warned[p], closed)
            spent += time.process_time() - t0
            events += sum(len(orjson.loads(r[2]).get("events", [0])) for r in recs[i:i + step])
            for key, doc in [*out.detections, *found.detections]:
                digest.update(key + doc)
            for _, key, value in out.closed:
                digest.update(key + value)
    return events, spent, digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode")
    parser.add_argument("--seconds", type=int, default=300, help="simulated seconds of a 1000 events/s city")
    parser.add_argument("--batch", type=int, default=100, help="events per record")
    parser.add_argument("--step", type=int, default=50, help="records per decode call (about a fetch)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--whole", action="store_true", help="the worker's whole step, not decoding alone")
    args = parser.parse_args()
    loads = records(args.seconds, args.batch)
    registry = Registry(City.sized_for(1000).entities)
    rates, digests = [], set()
    for _ in range(args.repeat):
        events, spent, digest = run_whole(loads, args.step, registry) if args.whole else run(loads, args.step)
        rates.append(events / spent)
        digests.add(digest)
    print(orjson.dumps({"events": events, "records": sum(map(len, loads.values())),
                        "events_per_s": {"min": round(min(rates)), "median": round(statistics.median(rates)),
                                         "max": round(max(rates))},
                        "digest": sorted(digests)}).decode())


if __name__ == "__main__":
    main()
