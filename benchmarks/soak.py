"""`make soak`: the whole stack under steady load for a long time. `python -m benchmarks.soak`.

Runs `citybrain up --simulate RATE` (broker, worker, API, simulator; benchmarks/latency.py's
`LiveStack`) at the rate the last `make bench` measured latency at, half the stack's
sustained rate (or `--rate`), with latency probes going all the time (latency.py's
`Prober`, one every `--probe-every` seconds). Every `--every` seconds it samples the worker's and the API's resident memory
(/proc), the consumer lag (event-topic end offsets minus the offsets the worker reports
done) and the produced rate; the probes' p50/p99 are given per interval of their send
time. Memory growth is counted from the end of the warm-up (`--warmup` minutes), when the
first windows have closed and been dropped. Prints a table and writes
benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.latency import MAX_PROBE_EVERY_S, ROOT, Lag, LiveStack, Prober, percentiles
from services.processes import rss_bytes

RESULTS = ROOT / "benchmarks" / "results"
MB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--rate", type=float, default=None,
                        help="events/s (default: the latency benchmark's, from results/latest.json)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes before memory growth counts")
    parser.add_argument("--probe-every", type=float, default=0.5, help="seconds between probes (default 0.5)")
    parser.add_argument("--max-rss-mb", type=float, default=8192,
                        help="stop early when the worker or the API grows past this (default 8192)")
    parser.add_argument("--engine", choices=("embedded", "kafka"), default="embedded",
                        help="the broker `up` runs (default embedded: memory only, it keeps every record)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the stack's data and logs here (default: a temporary directory, removed after)")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    if not 0 < args.probe_every <= MAX_PROBE_EVERY_S:
        parser.error(f"--probe-every: more than 0 and at most {MAX_PROBE_EVERY_S:g} s (benchmarks/latency.py)")
    rate = args.rate or latency_rate()
    kept = contextlib.nullcontext(str(args.workdir)) if args.workdir else None
    with kept or tempfile.TemporaryDirectory(prefix="citybrain-soak-") as tmp, \
            LiveStack(Path(tmp), rate, args.engine) as stack:
        result = asyncio.run(soak(stack, args.minutes * 60, args.every, args.probe_every, args.max_rss_mb))
    result |= {"engine": args.engine, "warmup_s": args.warmup * 60, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result["summary"] = summary(result["samples"], args.warmup * 60)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(table(result))
    print(f"\nwritten to {args.out}")


def latency_rate() -> float:
    """The rate the last `make bench` measured latency at: one the live stack kept up with,
    about half of what it can process."""
    latest = RESULTS / "latest.json"
    rate = orjson.loads(latest.read_bytes()).get("latency_rate_eps") if latest.exists() else None
    if rate is None:
        raise SystemExit(f"no latency rate in {latest}: run `make bench` first, or pass --rate")
    return rate


async def soak(stack: LiveStack, seconds: float, every_s: float, probe_every_s: float,
               max_rss_mb: float) -> dict[str, Any]:
    """Probe `stack` for `seconds` and sample it every `every_s`; the samples, each with
    its interval's latency, and the latency over the whole run."""
    pids = stack.pids()
    samples: list[dict[str, Any]] = []
    stopped_early = None
    async with Lag(stack.settings) as lag, Prober(stack) as prober:
        settled = await lag.settle(stack.rate, timeout_s=180.0)
        sender = asyncio.create_task(prober.send(int(seconds / probe_every_s), probe_every_s))
        began = time.monotonic()
        produced_before, _ = await lag.offsets()
        for n in range(1, int(seconds / every_s) + 1):
            await asyncio.sleep(max(0.0, began + n * every_s - time.monotonic()))
            # `up` stops by itself before the embedded broker fills the machine (README, Embedded broker).
            stopped_early = stack.stopped_by_itself()
            if stopped_early is not None:
                sender.cancel()
                break
            try:
                produced, behind = await lag.offsets()
                samples.append({"t_s": round(time.monotonic() - began),
                                "worker_rss_mb": round(rss_bytes(pids["worker"]) / MB, 1),
                                "api_rss_mb": round(rss_bytes(pids["api"]) / MB, 1),
                                # embedded: memory only, it keeps every record written (README, Soak)
                                "broker_rss_mb": round(rss_bytes(pids["broker"]) / MB, 1),
                                "lag": behind, "uncommitted": await lag.uncommitted(),
                                "produced_eps": round((produced - produced_before) / every_s)})
            except Exception as exc:  # noqa: BLE001 - a part died: keep what was measured, say why
                stopped_early = f"sampling failed after {round(time.monotonic() - began)} s: {exc!r}"
                sender.cancel()
                break
            produced_before = produced
            print("soak: " + ", ".join(f"{k} {v}" for k, v in samples[-1].items()), flush=True)
            # A process growing without bound would take the machine down with it.
            if max(samples[-1]["worker_rss_mb"], samples[-1]["api_rss_mb"]) > max_rss_mb:
                stopped_early = f"a process grew past {max_rss_mb:,.0f} MB after {samples[-1]['t_s']} s"
                sender.cancel()
                break
        (outcome,) = await asyncio.gather(sender, return_exceptions=True)
        if isinstance(outcome, Exception):
            raise outcome  # the probes did not go (a cancelled sender is not an Exception)
        await prober.arrived(timeout_s=60.0)
    for s in samples:  # each interval's probes, by when they were sent
        s |= percentiles([p for p in prober.probes
                          if s["t_s"] - every_s <= p.sent_at - began < s["t_s"]])
    return {"rate": stack.rate, "seconds": seconds, "every_s": every_s, "probe_every_s": probe_every_s,
            "stopped_early": stopped_early, "lag_at_start": settled, "samples": samples,
            "latency": percentiles(prober.probes)}


def summary(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Memory after the warm-up and its growth to the end, the lag's bounds, the range of
    the intervals' p99 after the warm-up."""
    after = [s for s in samples if s["t_s"] >= warmup_s] or samples[-1:]
    out: dict[str, Any] = {}
    for proc in ("worker", "api", "broker"):
        first, last = after[0][f"{proc}_rss_mb"], after[-1][f"{proc}_rss_mb"]
        out[proc] = {"rss_mb_after_warmup": first, "rss_mb_end": last,
                     "growth_pct": round(100 * (last - first) / first, 1)}
    lags = [s["lag"] for s in samples]
    p99s = [s["p99_ms"] for s in after if s["p99_ms"] is not None]
    out["lag"] = {"max": max(lags), "end": lags[-1], "after_warmup_max": max(s["lag"] for s in after),
                  "uncommitted_end": samples[-1]["uncommitted"]}
    out["p99_ms"] = {"min": min(p99s, default=None), "max": max(p99s, default=None)}
    return out


def table(r: dict[str, Any]) -> str:
    head = ("t", "worker RSS MB", "API RSS MB", "broker RSS MB", "lag", "uncommitted", "produced/s", "probes", "p50 ms", "p99 ms")
    rows = [head] + [(f"{s['t_s'] // 60}:{s['t_s'] % 60:02d}", f"{s['worker_rss_mb']:,.0f}",
                      f"{s['api_rss_mb']:,.0f}", f"{s['broker_rss_mb']:,.0f}", f"{s['lag']:,}", f"{s['uncommitted']:,}", f"{s['produced_eps']:,}",
                      f"{s['arrived']}/{s['probes']}", _ms(s["p50_ms"]), _ms(s["p99_ms"]))
                     for s in r["samples"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    m, lat = r["summary"], r["latency"]
    ran = f"{r['seconds'] / 60:g} min" + (f", stopped early: {r['stopped_early']}" if r["stopped_early"] else "")
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows) + (
        "\n\nlag: event records not processed yet; uncommitted: past the worker group's committed offsets"
        f"\n{r['rate']:,.0f} events/s for {ran}; after {r['warmup_s'] / 60:g} min of warm-up "
        f"the worker grew {m['worker']['growth_pct']}% ({m['worker']['rss_mb_after_warmup']:,.0f} → "
        f"{m['worker']['rss_mb_end']:,.0f} MB), the API {m['api']['growth_pct']}% "
        f"({m['api']['rss_mb_after_warmup']:,.0f} → {m['api']['rss_mb_end']:,.0f} MB), the {r.get('engine', 'embedded')} broker "
        f"{m['broker']['growth_pct']}% ({m['broker']['rss_mb_after_warmup']:,.0f} → {m['broker']['rss_mb_end']:,.0f} MB); lag at most "
        f"{m['lag']['after_warmup_max']:,} records after warm-up, {m['lag']['uncommitted_end']:,} uncommitted "
        f"at the end; latency p50 {_ms(lat['p50_ms'])} ms, "
        f"p99 {_ms(lat['p99_ms'])} ms over {lat['arrived']}/{lat['probes']} probes")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


if __name__ == "__main__":
    main()
