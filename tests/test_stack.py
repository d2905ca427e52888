"""`citybrain up`: the quick start a new user runs, end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from services.processes import port_in_use
from tests.conftest import ROOT, free_port, wait_for


def start_up(tmp_path: Path, *flags: str, **settings: str) -> tuple[subprocess.Popen, int, int]:
    broker_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env["CITYBRAIN_SESSION_TIMEOUT_S"] = "2"
    env.update(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--broker-port", str(broker_port),
         "--api-port", str(api_port), "--data-dir", str(tmp_path), *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, broker_port, api_port


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def viewer_token(data_dir: Path) -> str:
    lines = (data_dir / "tokens").read_text().splitlines()
    return next(line.split("=")[0] for line in lines if line.endswith("=viewer"))


def test_up_simulates_a_living_city_then_stops_cleanly(processes: None, tmp_path: Path) -> None:
    proc, broker_port, api_port = start_up(tmp_path, "--simulate", "500")
    url = f"http://127.0.0.1:{api_port}"
    try:
        wait_for(lambda: _status(url + "/readyz") == 200, timeout=60)
        headers = {"Authorization": f"Bearer {viewer_token(tmp_path)}"}

        def counts() -> dict[str, int]:
            doc = httpx.get(url + "/api/v1/overview", headers=headers).json()
            return {d: v["events"] for d, v in doc["domains"].items()}

        first = wait_for(lambda: (c := counts()) and all(c.values()) and c, timeout=60)
        wait_for(lambda: all(counts()[d] > first[d] for d in first), timeout=30)
        pids = children_of(proc.pid)
        assert len(pids) >= 4  # broker, worker, api, simulator
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"127.0.0.1:{broker_port}" in out and url in out and str(tmp_path / "tokens") in out
    assert not any(alive(p) for p in pids)
    assert not port_in_use("127.0.0.1", broker_port) and not port_in_use("127.0.0.1", api_port)


def test_make_run_shows_a_first_alert_live_within_a_minute(processes: None, tmp_path: Path) -> None:
    """What a new user sees: `make run` is `citybrain up --simulate 1000`."""
    began = time.monotonic()
    proc, _, api_port = start_up(tmp_path, "--simulate", "1000")
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{api_port}/readyz") == 200, timeout=60)
        with connect(f"ws://127.0.0.1:{api_port}/api/v1/alerts/live") as ws:
            # From the beginning (position ""), as a dashboard opened a little late is.
            ws.send(orjson.dumps({"token": viewer_token(tmp_path), "position": ""}).decode())
            try:
                while (message := orjson.loads(ws.recv(timeout=max(0.1, 60 - (time.monotonic() - began)))))[
                        "type"] != "alert":
                    pass
            except TimeoutError:
                pytest.fail("no alert on WS /api/v1/alerts/live within 60 s of citybrain up")
        first_s = time.monotonic() - began
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    print(f"first alert {message['alert']['rule']} after {first_s:.1f} s")
    assert first_s < 60, out


def test_killing_up_with_sigkill_leaves_no_orphans(processes: None, tmp_path: Path) -> None:
    proc, broker_port, api_port = start_up(tmp_path)
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{api_port}/readyz") == 200, timeout=60)
        pids = children_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not any(alive(p) for p in pids), timeout=30)
    wait_for(lambda: not port_in_use("127.0.0.1", broker_port)
             and not port_in_use("127.0.0.1", api_port), timeout=10)


def test_up_stops_the_whole_stack_with_one_line_when_the_embedded_broker_outgrows_its_limit(processes: None, 
        tmp_path: Path) -> None:
    # The broker's resident memory is tens of MB from the start: past a 1 MB limit at the first look.
    proc, broker_port, api_port = start_up(tmp_path, "--simulate", "200", CITYBRAIN_BROKER_MEMORY_LIMIT_MB="1")
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    assert "ready:" in out  # it ran, and was stopped by the watch, not by a failed start
    said = [line for line in out.splitlines() if "CITYBRAIN_BROKER_MEMORY_LIMIT_MB" in line]
    assert len(said) == 1 and said[0].startswith("citybrain: stopping: the embedded broker uses"), out
    assert "keeps every record in memory" in said[0] and "--broker HOST:PORT" in said[0]
    assert "Traceback" not in out
    wait_for(lambda: not port_in_use("127.0.0.1", broker_port)
             and not port_in_use("127.0.0.1", api_port), timeout=10)


def test_up_warns_once_and_runs_on_when_the_embedded_broker_passes_its_warning_level(processes: None, tmp_path: Path) -> None:
    proc, _, api_port = start_up(tmp_path, CITYBRAIN_BROKER_MEMORY_WARN_MB="1")
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{api_port}/readyz") == 200, timeout=60)
        time.sleep(3)  # the watch looks every half second once the stack is ready
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("citybrain: warning: the embedded broker")]
    assert len(warnings) == 1 and "CITYBRAIN_BROKER_MEMORY_LIMIT_MB" in warnings[0], out


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0
