"""Memory of window state per entity: what a worker holds for 10,000 entities.

Feeds the processor (streams/processor.py, the worker's logic) three windows of one
reading a minute from each of 10,000 traffic detectors, with the state in a plain dict as
Faust's memory store keeps it, and measures the Python heap the state takes (tracemalloc)
and its serialised size (the changelog). Only window state exists so far; detector state
will add to it.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from streams.partitioning import partition_for
from streams.processor import PartitionProcessor, Record
from streams.registry import Registry

ENTITIES = 10_000
T0 = 1_795_219_200_000
PARTITIONS = 8


def measure(entities: int = ENTITIES, windows: int = 3) -> dict[str, Any]:
    registry = Registry({"id": f"T-{i:05d}", "domain": "traffic", "district": f"D{i % 7}",
                         "street": f"S{i % 61}", "community": f"C{i % 400}", "grid_cell": f"G{i % 2000}"}
                        for i in range(entities))
    # Lateness longer than the run: every window stays open, the worst case for memory.
    processor = PartitionProcessor("traffic", "t", PARTITIONS, 60_000, 10 * 60_000, registry)
    state: dict[str, Any] = {}
    offsets = [0] * PARTITIONS
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for w in range(windows):
        per_partition: dict[int, list[Record]] = {}
        for i in range(entities):
            eid = f"T-{i:05d}"
            p = partition_for(eid, PARTITIONS)
            value = orjson.dumps({"type": "traffic.flow", "ts": T0 + w * 60_000 + i, "sensor_id": eid,
                                  "interval_s": 60, "volume": i % 40, "speed_kmh": 40.0, "occupancy": 0.2})
            per_partition.setdefault(p, []).append(Record(p, offsets[p], eid.encode(), value))
            offsets[p] += 1
        for p, records in per_partition.items():
            step = processor.step(p, records, state, state.keys)
            for key, value in step.writes:
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    serialised = sum(len(k) + len(orjson.dumps(v)) for k, v in state.items())
    return {"entities": entities, "open_windows_per_entity": windows, "state_keys": len(state),
            "heap_bytes": heap, "bytes_per_entity": round(heap / entities),
            "changelog_bytes_per_entity": round(serialised / entities)}


if __name__ == "__main__":
    print(orjson.dumps(measure(), option=orjson.OPT_INDENT_2).decode())
