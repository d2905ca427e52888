"""The benchmark harness runs and its numbers are consistent (never how fast: that is
for benchmarks/, not for tests on a shared machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import ROOT


def test_quick_benchmark_processes_every_record_it_loaded(tmp_path: Path) -> None:
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
