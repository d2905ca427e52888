"""`make bench`: the benchmark harness. `python -m benchmarks [--quick]`.

Starts its own embedded broker, pre-loads a simulated city's events as single-event and
as batch records, measures the ceiling and the pipeline on the same records; then runs
`citybrain up` under live load at half the pipeline's single-event rate and measures the
latency from an event to its alert on the live feed (benchmarks/latency.py). Prints a
table with ratios and writes benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks import latency, memory
from benchmarks.throughput import ROOT, ceiling, machine, peer, pipeline, preload
from services.broker import EmbeddedBroker
from services.config import Settings

SIZES = {  # simulated seconds of a city sized for 1000 events/s; latency probes and top rate
    "standard": {"single": 240, "batch": 720, "probes": 240, "max_rate": None},
    "quick": {"single": 20, "batch": 40, "probes": 20, "max_rate": 300},
}
BATCH = 100


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="a small run, for smoke tests")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args()
    size = "quick" if args.quick else "standard"
    with tempfile.TemporaryDirectory(prefix="citybrain-bench-") as tmp:
        with EmbeddedBroker(latency.free_port(), Path(tmp) / "broker") as broker:
            base = Settings(broker=broker.address, data_dir=Path(tmp), session_timeout_s=2.0)
            results = run(base, size, Path(tmp))
        # After the throughput broker is gone: the live stack brings its own, as `up` does.
        lat = live_latency(size, results["pipeline_single_eps"], Path(tmp) / "latency")
    results |= {"latency_p50_ms": lat["p50_ms"], "latency_p99_ms": lat["p99_ms"],
                "latency_rate_eps": lat["rate"], "latency_probes": lat["probes"]}
    results["runs"]["latency"] = lat
    results |= {"size": size, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(table(results))
    print(f"\nwritten to {args.out}")


def run(base: Settings, size: str, workdir: Path) -> dict:
    single = asyncio.run(preload(base, "single", 1000, SIZES[size]["single"], 1))
    batch = asyncio.run(preload(base, "batch", 1000, SIZES[size]["batch"], BATCH))
    out = {"single": {"events": single.events, "records": single.records},
           "batch": {"events": batch.events, "records": batch.records, "events_per_record": BATCH}}
    out["single"]["ceiling"] = asyncio.run(ceiling(single))
    out["batch"]["ceiling"] = asyncio.run(ceiling(batch))
    out["single"]["pipeline"] = pipeline(single, workdir)
    out["batch"]["pipeline"] = pipeline(batch, workdir)
    out["single"]["naive_faust"] = peer("benchmarks.naive_faust", single, workdir)
    out["single"]["quix"] = peer("benchmarks.quix", single, workdir)
    out["memory"] = memory.measure(entities=1_000 if size == "quick" else memory.ENTITIES)
    return {
        "ceiling_eps": round(out["batch"]["ceiling"]["events_per_s"]),
        "ceiling_single_eps": round(out["single"]["ceiling"]["events_per_s"]),
        "pipeline_batch_eps": round(out["batch"]["pipeline"]["events_per_s"]),
        "pipeline_single_eps": round(out["single"]["pipeline"]["events_per_s"]),
        "naive_faust_eps": _rate(out["single"]["naive_faust"]),
        "quix_eps": _rate(out["single"]["quix"]),
        "bytes_per_entity": out["memory"]["bytes_per_entity"],
        "runs": out,
    }


def live_latency(size: str, pipeline_single_eps: int, workdir: Path) -> dict:
    """Latency under half the pipeline's single-event rate (capped for a quick run)."""
    rate = pipeline_single_eps / 2
    if SIZES[size]["max_rate"] is not None:
        rate = min(rate, SIZES[size]["max_rate"])
    return latency.measure(workdir, round(rate), SIZES[size]["probes"])


def _rate(measured: dict) -> int | None:
    return round(measured["events_per_s"]) if "events_per_s" in measured else None


def _shown(figure: float | None) -> str:
    return f"{figure:,}" if figure is not None else "could not run (see runs)"


def table(r: dict) -> str:
    naive = r["naive_faust_eps"] or float("nan")
    quix = r["quix_eps"] or float("nan")
    rows = [
        ("records", "ceiling events/s", "pipeline events/s", "pipeline / ceiling", "pipeline / naive Faust",
         "pipeline / Quix"),
        ("batch (100 events)", f"{r['ceiling_eps']:,}", f"{r['pipeline_batch_eps']:,}",
         f"{r['pipeline_batch_eps'] / r['ceiling_eps']:.3f}", f"{r['pipeline_batch_eps'] / naive:.1f}", ""),
        ("single event", f"{r['ceiling_single_eps']:,}", f"{r['pipeline_single_eps']:,}",
         f"{r['pipeline_single_eps'] / r['ceiling_single_eps']:.3f}", f"{r['pipeline_single_eps'] / naive:.1f}",
         f"{r['pipeline_single_eps'] / quix:.2f}"),
        ("naive Faust (single)", "", _shown(r["naive_faust_eps"]), "", "", ""),
        ("Quix Streams (single)", "", _shown(r["quix_eps"]), "", "", ""),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    m = r["runs"]["memory"]
    lat = r["runs"]["latency"]
    given_up = ", ".join(f"{o['rate']:,}" for o in lat["overloaded_at"])
    caveats = f" (the live stack fell behind at {given_up} events/s)" if given_up else ""
    if not lat["sustained"]:
        caveats += "; it fell behind at this rate too, so the figures include a growing backlog"
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows) + (
        f"\n\nwindow state: {m['bytes_per_entity']:,} bytes of heap per entity with "
        f"{m['open_windows_per_entity']} open windows ({m['changelog_bytes_per_entity']:,} bytes in the "
        f"changelog), measured on {m['entities']:,} entities"
        f"\nlatency, event produced → alert on the live feed: p50 {_shown(r['latency_p50_ms'])} ms, "
        f"p99 {_shown(r['latency_p99_ms'])} ms ({lat['arrived']}/{lat['probes']} probes arrived) under "
        f"{r['latency_rate_eps']:,} events/s of live load{caveats}")


if __name__ == "__main__":
    main()
