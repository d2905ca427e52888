"""Two checkouts' workers on the same batch records, interleaved, in one sitting.

    python -m benchmarks.pipeline_ab --a ../main --b . --order abbaabba --seconds 1800 --out /tmp/ab

On a shared machine a pipeline rate moves by 2× between runs, so a before/after is only
worth its figures when both sides run on one broker, on the same records, in turns.
This pre-loads a city sized for 1000 events/s once (benchmarks/throughput.py `preload`,
100-event batch records), copies it to one topic set per run (a worker's group and
tables live under its prefix, so each run starts fresh), then for each run measures the
ceiling (`ceiling`) and one `citybrain worker` of checkout a or b (`pipeline`, started in
that checkout, so its code is what runs). Beside the wall-clock rate, the worker's own
CPU time between its first and last vitals is read from /proc: events per CPU second
hardly move with what else the machine runs. With `--spy PY_SPY` each worker is profiled
(`py-spy record --nonblocking`, raw stacks in `--out`). One JSON line per run.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks import throughput
from benchmarks.latency import free_broker_port
from services.broker import local_broker
from services.config import Settings
from services.provision import ensure_topics
from streams.kafka_security import client_options
from streams.topics import DOMAINS
from streams.topicview import read_to_end

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


async def copy(src: throughput.Load, name: str) -> throughput.Load:
    """The load's event and registry records, as they are, under another prefix."""
    dst = replace(src.settings, topic_prefix=f"bench-{name}.")
    await ensure_topics(dst)
    topics = [src.settings.topics.events(d) for d in DOMAINS] + [src.settings.topics.registry]
    options = client_options(src.settings.bootstrap)
    consumer = AIOKafkaConsumer(*topics, **options, group_id=f"copy-{name}", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    producer = AIOKafkaProducer(**options, acks=1, linger_ms=20, max_batch_size=1 << 20)
    await consumer.start()
    await producer.start()
    copied, pending = 0, []
    try:
        while True:
            got = await consumer.getmany(timeout_ms=2000, max_records=20_000)
            if not got and copied >= src.records:
                break
            for tp, msgs in got.items():
                topic = dst.topic_prefix + tp.topic[len(src.settings.topic_prefix):]
                pending += [await producer.send(topic, m.value, key=m.key, partition=tp.partition) for m in msgs]
                copied += len(msgs) if tp.topic != src.settings.topics.registry else 0
        await asyncio.gather(*pending)
    finally:
        await consumer.stop()
        await producer.stop()
    return throughput.Load(dst, src.batch, src.events, src.records)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def measured(load: throughput.Load, code: Path, out: Path, tag: str, spy: str | None) -> dict[str, Any]:
    """`throughput.pipeline` with the worker started in `code`, its CPU time sampled."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    spies: list[subprocess.Popen] = []
    spawn = throughput.spawn

    def sample(pid: int) -> None:
        while not done.is_set():
            try:
                samples.append((time.time(), _cpu_s(pid)))
            except (OSError, IndexError):
                return
            time.sleep(0.05)

    def spawn_sampled(argv: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = spawn(argv, **kwargs)
        threading.Thread(target=sample, args=(proc.pid,), daemon=True).start()
        if spy:
            spies.append(subprocess.Popen([spy, "record", "--pid", str(proc.pid), "-r", "50", "-f", "raw",
                                           "--nonblocking", "-o", str(out / f"spy-{tag}.txt")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return proc

    throughput.spawn, throughput.ROOT = spawn_sampled, code
    try:
        rate = throughput.pipeline(load, out)
    finally:
        done.set()
        throughput.spawn, throughput.ROOT = spawn, Path(throughput.__file__).resolve().parents[1]
        for s in spies:
            s.wait(timeout=60)
    # the span `pipeline` timed: from the worker's first vitals to its last
    vitals = asyncio.run(read_to_end(load.settings.bootstrap, load.settings.topics.vitals))
    stamps = sorted(orjson.loads(v)["updated_at"] for _, v in vitals if v)
    times = [t for t, _ in samples]

    def cpu_at(ms: int) -> float:
        return samples[min(bisect.bisect_left(times, ms / 1000), len(samples) - 1)][1]

    cpu = cpu_at(stamps[-1]) - cpu_at(stamps[0])
    counted = rate["events_per_s"] * rate["seconds"]  # the events applied within that span
    return {**rate, "cpu_s": cpu, "events_per_cpu_s": counted / cpu, "worker_cpu_s": samples[-1][1]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_ab")
    parser.add_argument("--a", type=Path, required=True, help="checkout a (e.g. main)")
    parser.add_argument("--b", type=Path, required=True, help="checkout b (e.g. this branch)")
    parser.add_argument("--order", default="abbaabba", help="which checkout runs each turn")
    parser.add_argument("--seconds", type=int, default=1800, help="simulated seconds pre-loaded (make bench: 1800)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pipeline-ab")
    parser.add_argument("--spy", help="a py-spy binary, to profile each worker")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    code = {"a": args.a.resolve(), "b": args.b.resolve()}
    with tempfile.TemporaryDirectory(prefix="citybrain-ab-") as tmp:
        with local_broker("embedded", free_broker_port(), Path(tmp)) as broker:
            base = Settings(broker=broker.address, data_dir=Path(tmp), session_timeout_s=2.0)
            first = asyncio.run(throughput.preload(base, "ab0", 1000, args.seconds, 100))
            loads = [first] + [asyncio.run(copy(first, f"ab{i}")) for i in range(1, len(args.order))]
            for i, (side, load) in enumerate(zip(args.order, loads)):
                ceiling = asyncio.run(throughput.ceiling(load))
                run = measured(load, code[side], args.out, f"{i}-{side}", args.spy)
                print(orjson.dumps({"turn": i, "side": side, "code": str(code[side]), "events": load.events,
                                    "ceiling_eps": round(ceiling["events_per_s"]), "pipeline_eps": round(run["events_per_s"]),
                                    "of_ceiling": round(run["events_per_s"] / ceiling["events_per_s"], 4),
                                    "events_per_cpu_s": round(run["events_per_cpu_s"]), "cpu_s": round(run["cpu_s"], 2),
                                    "worker_cpu_s": round(run["worker_cpu_s"], 2), "at": time.strftime("%H:%M:%S"),
                                    "load_average": os.getloadavg()[0]}).decode(), flush=True)


if __name__ == "__main__":
    main()
