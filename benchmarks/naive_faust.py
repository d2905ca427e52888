"""The baseline a new Faust user writes: an agent iterating events, one windowed-table
update per event. `python -m benchmarks.naive_faust BOOTSTRAP PREFIX EVENTS` runs it over
the pre-loaded event topics and prints one JSON line with its rate.

Same job as the pipeline's core (per-entity tumbling-window count, sum and max of one
field per domain), none of its batching: this is what the project is measured against.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import faust
import orjson

from streams.topics import DOMAINS, Topics

MEASURE = {"gate": "temperature_c", "traffic": "volume", "grid": "load_kw"}
ID = {"gate": "gate_id", "traffic": "sensor_id", "grid": "feeder_id"}


def build(bootstrap: str, prefix: str, expected: int, datadir: Path) -> faust.App:
    topics = Topics(prefix)
    app = faust.App(f"{prefix}naive", broker=f"citybrain://{bootstrap}", store="memory://",
                    datadir=str(datadir), topic_partitions=8, web_enabled=False,
                    broker_session_timeout=2.0, broker_heartbeat_interval=0.3,
                    consumer_auto_offset_reset="earliest", topic_disable_leader=True)
    source = app.topic(*[topics.events(d) for d in DOMAINS], value_serializer="raw")
    windows = app.Table("windows", default=lambda: [0, 0.0, None], partitions=8).tumbling(60, expires=3600)
    seen = {"n": 0, "first": None}

    @app.agent(source)
    async def aggregate(stream: faust.StreamT) -> None:
        async for raw in stream:
            if seen["first"] is None:
                seen["first"] = time.perf_counter()
            doc = orjson.loads(raw)
            for e in doc.get("events", [doc]):
                domain = e["type"].split(".")[0]
                value = e.get(MEASURE[domain]) or 0.0
                n, total, top = windows[e[ID[domain]]].value()
                windows[e[ID[domain]]] = [n + 1, total + value, value if top is None else max(top, value)]
                seen["n"] += 1
            if seen["n"] >= expected:
                elapsed = time.perf_counter() - seen["first"]
                print(orjson.dumps({"events": seen["n"], "seconds": elapsed,
                                    "events_per_s": seen["n"] / elapsed}).decode(), flush=True)
                os._exit(0)  # the measurement is printed; a graceful stop adds nothing to it

    return app


def main() -> None:
    bootstrap, prefix, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    datadir = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("/tmp/citybrain-naive")
    # The windowed table's changelog is Faust's to declare here: a naive user doesn't provision.
    app = build(bootstrap, prefix, expected, datadir)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
