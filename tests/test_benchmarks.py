"""The benchmark harness runs and its numbers are consistent (never how fast: that is
for benchmarks/, not for tests on a shared machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT


def test_quick_benchmark_processes_every_record_it_loaded_and_every_probe_alerts(processes: None, tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pipeline / ceiling" in run.stdout
    r = orjson.loads(out.read_bytes())
    for kind in ("single", "batch"):
        loaded = r["runs"][kind]
        assert loaded["ceiling"]["events"] == loaded["events"] > 0
        assert loaded["pipeline"]["events"] == loaded["events"]
    assert r["runs"]["batch"]["records"] < r["runs"]["batch"]["events"]
    for peer in ("naive_faust", "quix"):
        assert r["runs"]["single"][peer]["events"] == r["runs"]["single"]["events"], peer
    assert all(r[k] > 0 for k in ("ceiling_eps", "pipeline_batch_eps", "pipeline_single_eps",
                                  "naive_faust_eps", "quix_eps", "bytes_per_entity"))
    assert r["machine"]["versions"]["faust-streaming"]
    # Live: the quick size's rate was tried and every probe's alert came over the live feed
    # there, whether the stack kept up with it or not (how fast is for benchmarks/, and a
    # busy machine may halve the rate once), and the figures are those attempts' own.
    attempts = r["runs"]["live"]
    (at,) = [a for a in attempts if a["rate"] == r["latency_target_eps"]]
    assert at["arrived"] == at["probes"] > 0
    assert 0 < at["p50_ms"] <= at["p99_ms"] <= at["max_ms"]
    assert (r["latency_target_p50_ms"], r["latency_target_p99_ms"], r["latency_target_kept_up"]) == (
        at["p50_ms"], at["p99_ms"], at["sustained"])
    kept = [a for a in attempts if a["sustained"]]
    assert r["live_eps"] == r["latency_rate_eps"] == max((a["rate"] for a in kept), default=None)
    if kept:
        (best,) = [a for a in kept if a["rate"] == r["live_eps"]]
        assert best["arrived"] == best["probes"] == r["latency_probes"]
        assert (r["latency_p50_ms"], r["latency_p99_ms"]) == (best["p50_ms"], best["p99_ms"])
        assert "alert on the live feed" in run.stdout
    # Broker writes, from the broker: each run wrote something per input it read, and the
    # pipeline runs read every record that was loaded.
    for kind in ("single", "batch"):
        writes = r["runs"][kind]["broker_writes"]
        assert (writes["input_records"], writes["input_events"]) == (r["runs"][kind]["records"], r["runs"][kind]["events"])
    for run_name in ("single", "batch", "live"):
        assert r["broker_records_per_event"][run_name] > 0 and r["broker_bytes_per_input_byte"][run_name] > 0
    assert (best if kept else at)["broker_writes"]["input_records"] >= at["probes"]
    assert "broker writes per input" in run.stdout


def test_the_live_search_halves_until_a_rate_is_kept_up_with_and_doubles_while_every_one_is() -> None:
    from benchmarks.latency import next_rate

    def ladder(keeps_up_with: float, start: float = 20_000, top: float = 80_000, floor: float = 500) -> list[float]:
        tried: list[tuple[float, bool]] = []
        while (rate := next_rate(tried, start, top, floor)) is not None:
            tried.append((rate, rate <= keeps_up_with))
        return [r for r, _ in tried]

    assert ladder(keeps_up_with=6_000) == [20_000, 10_000, 5_000]
    assert ladder(keeps_up_with=20_000) == [20_000, 40_000]
    assert ladder(keeps_up_with=1e9) == [20_000, 40_000, 80_000]  # no higher than the top
    assert ladder(keeps_up_with=100) == [20_000, 10_000, 5_000, 2_500, 1_250, 625]  # no lower than the floor


@pytest.mark.parametrize("every_s", [0.25, 1.0, 2.0, 10.0])
def test_a_probe_gate_raises_a_new_alert_each_time_and_never_falls_silent(every_s: float) -> None:
    """The probe pool's schedule against the rules' timings: gate.fever resolves once a
    gate's passes have been normal for 60 s, the alert lifecycle reopens an alert that
    fires again within 300 s of resolving, and gate.offline fires after 90 s without a
    pass. Probes jittered ±50 % as the soak sends them, over three cycles."""
    import numpy as np

    from benchmarks.latency import MAX_PROBE_EVERY_S, probe_gates, probe_passes

    assert every_s <= MAX_PROBE_EVERY_S
    gates, events = probe_gates(every_s), {}
    at = np.cumsum(every_s * np.random.default_rng(3).uniform(0.5, 1.5, 3 * probe_gates(every_s)))
    for n, t in enumerate(at.tolist()):
        gate, normal = probe_passes(n, gates)
        events.setdefault(gate, []).append((t, "fever"))
        for other in normal:
            events.setdefault(other, []).append((t, "normal"))
    for gate, seen in events.items():
        times = [t for t, _ in seen]
        assert max(b - a for a, b in zip(times, times[1:])) < 90, gate  # within gate.offline's timeout
        fevers = [i for i, (_, kind) in enumerate(seen) if kind == "fever"]
        for i, j in zip(fevers, fevers[1:]):
            normal = [t for t, _ in seen[i + 1:j]]
            resolved = next(t for t in normal if t - normal[0] >= 60)
            assert seen[j][0] - resolved > 300, gate  # the next probe is a new alert, not a reopened one


def test_soak_summary_counts_memory_growth_from_the_end_of_the_warmup() -> None:
    from benchmarks.soak import summary, table

    samples = [{"t_s": t, "worker_rss_mb": 100.0 + t, "api_rss_mb": 50.0, "broker_rss_mb": 200.0, "lag": lag, "uncommitted": 2 * lag,
                "produced_eps": 500,
                "probes": 60, "arrived": 60, "p50_ms": 900.0, "p99_ms": p99, "max_ms": p99}
               for t, lag, p99 in ((30, 9000, 5000.0), (60, 400, 1500.0), (90, 500, 1800.0), (120, 300, 1600.0))]
    s = summary(samples, warmup_s=60)
    assert s["worker"] == {"rss_mb_after_warmup": 160.0, "rss_mb_end": 220.0, "growth_pct": 37.5}
    assert s["api"]["growth_pct"] == 0.0
    assert s["lag"] == {"max": 9000, "end": 300, "after_warmup_max": 500, "uncommitted_end": 600}
    assert s["p99_ms"] == {"min": 1500.0, "max": 1800.0}
    result = {"rate": 500, "seconds": 120, "warmup_s": 60, "stopped_early": None, "samples": samples, "summary": s,
              "latency": {"p50_ms": 900.0, "p99_ms": 4000.0, "probes": 240, "arrived": 240}}
    assert "the worker grew 37.5%" in table(result) and "2:00" in table(result)


def test_a_live_rate_not_counted_as_kept_up_says_why() -> None:
    from benchmarks.__main__ import _why_not_kept_up

    short = {"rate": 300, "sustained": False, "lag_at_end": 45, "produced_eps": 258}
    assert "the simulator produced only 258 events/s" in _why_not_kept_up(short)
    assert "growing backlog" in _why_not_kept_up(short | {"lag_at_end": 5_000})
    assert "growing backlog" in _why_not_kept_up({"rate": 300, "sustained": False, "lag_at_start": 9_000})
    assert "the stack stopped: citybrain up exited" in _why_not_kept_up(
        {"rate": 300, "sustained": False, "error": "citybrain up exited with code 1"})
    assert _why_not_kept_up(short | {"sustained": True}) == ""


def test_a_run_without_the_scale_step_says_so_rather_than_failing_its_table() -> None:
    from benchmarks.__main__ import memory_lines

    assert memory_lines({"runs": {}}) == "window state and scale: not measured (--no-scale)\n"
