"""Memory of a worker's state per entity: what it holds for a city of N traffic detectors.

Feeds the processor (streams/processor.py, the worker's logic, with the rules on) three
windows of one reading a minute from each detector, into the partitions' columnar state
(streams/state.py), and measures the Python heap that state takes (tracemalloc: window
blocks, area shares, slot indexes and detector state), the size of its snapshot (what
the changelog holds), and the step's events per second of CPU time (in a run without
tracemalloc, which slows every allocation). Lateness is longer than the run, so every
window stays open: the worst case for memory. The heap counted is the partitions' state
and what lives on after the run (the registry); the processor's derived caches go with it.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

import orjson

from services.cli import GC_THRESHOLDS
from streams.detectors import detector
from streams.partitioning import partition_for
from streams.processor import PartitionProcessor, Record
from streams.registry import Registry
from streams.rules import RuleBook
from streams.state import PartitionState, encode
from streams.windows import SHAPES

ENTITIES = 10_000
T0 = 1_795_219_200_000
PARTITIONS = 8
STEP = 5000  # records per step, about a fetch


def city(entities: int, windows: int) -> dict[int, list[list[Record]]]:
    """Per partition, its records in fetch-sized steps: `windows` minutes of one reading
    per detector."""
    steps: dict[int, list[list[Record]]] = {}
    offsets = [0] * PARTITIONS
    for w in range(windows):
        per_partition: dict[int, list[Record]] = {}
        for i in range(entities):
            eid = f"T-{i:07d}"
            p = partition_for(eid, PARTITIONS)
            # readings that change from minute to minute, as a working detector's do (the
            # same reading three times in a row is a stuck sensor, and every detector would fire)
            value = orjson.dumps({"type": "traffic.flow", "ts": T0 + w * 60_000 + i % 60_000, "sensor_id": eid,
                                  "interval_s": 60, "volume": (i + 7 * w) % 40, "speed_kmh": 40.0 + (i + w) % 7,
                                  "occupancy": 0.2 + 0.01 * w})
            per_partition.setdefault(p, []).append(Record(p, offsets[p], eid.encode(), value))
            offsets[p] += 1
        for p, records in per_partition.items():
            steps.setdefault(p, []).extend(records[i:i + STEP] for i in range(0, len(records), STEP))
    return steps


def registry_of(entities: int) -> Registry:
    return Registry({"id": f"T-{i:07d}", "domain": "traffic", "district": f"D{i % 7}",
                     "street": f"S{i % 61}", "community": f"C{i % 400}", "grid_cell": f"G{i % 2000}"}
                    for i in range(entities))


def run(registry: Registry, steps: dict[int, list[list[Record]]], detect: bool) -> dict[int, PartitionState]:
    processor = PartitionProcessor("traffic", "t", PARTITIONS, 60_000, 10 * 60_000, registry,
                                   clock=lambda: 4e9,
                                   detector=detector("traffic", RuleBook(), registry) if detect else None)
    states = {p: PartitionState(SHAPES["traffic"]) for p in steps}
    for p, batches in steps.items():
        for records in batches:
            processor.step(p, records, states[p])
    return states


def measure(entities: int = ENTITIES, windows: int = 3, detect: bool = True) -> dict[str, Any]:
    steps = city(entities, windows)
    events = sum(len(b) for batches in steps.values() for b in batches)
    # The collector as a worker runs it, and the input records out of its reach: they are
    # the benchmark's, and at 1M entities a full collection walking them cost the step more
    # with every size (a worker holds one fetch of records, not the whole city's).
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
    registry = registry_of(entities)  # the worker's start-up, not its step
    start = time.process_time()
    run(registry, steps, detect)
    elapsed = time.process_time() - start
    del registry
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    states = run(registry_of(entities), steps, detect)  # the registry counts: a worker holds it
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    snapshot = sum(len(c) for state in states.values() for c in encode(state))
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    return {"entities": entities, "open_windows_per_entity": windows, "detector_state": detect,
            "heap_bytes": heap, "bytes_per_entity": round(heap / entities),
            "snapshot_bytes_per_entity": round(snapshot / entities),
            "events_per_s": round(events / elapsed)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, nargs="+", default=[ENTITIES], help="city sizes, measured in turn")
    ap.add_argument("--windows", type=int, default=3, help="one-minute windows held open")
    ap.add_argument("--no-rules", action="store_true", help="windows and area shares only")
    args = ap.parse_args()
    for n in args.entities:
        print(orjson.dumps(measure(n, args.windows, not args.no_rules)).decode(), flush=True)
