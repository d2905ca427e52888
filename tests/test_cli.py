"""What a person sees when something is wrong: one line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from services.broker import EmbeddedBroker
from tests.conftest import ROOT, free_port


def citybrain(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=60)


def one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("citybrain: error: ")
    for f in fragments:
        assert f in lines[0]


def test_up_on_a_busy_api_port(processes: None, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = citybrain("up", "--api-port", str(port), "--data-dir", str(tmp_path))
    one_line_error(r, f"port {port}", "already in use")


def test_up_on_a_busy_broker_port(tmp_path: Path, broker: EmbeddedBroker) -> None:
    r = citybrain("up", "--broker-port", str(broker.port), "--api-port", str(free_port()),
                  "--data-dir", str(tmp_path))
    one_line_error(r, f"port {broker.port}", "already in use")


def test_unreachable_broker(processes: None, tmp_path: Path) -> None:
    r = citybrain("topics", "--broker", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path))
    one_line_error(r, "cannot reach Kafka")


def test_bad_values_from_flags_and_variables(processes: None, tmp_path: Path) -> None:
    one_line_error(citybrain("topics", "--partitions", "0"), "partitions")
    one_line_error(citybrain("api", env={"CITYBRAIN_API_PORT": "http"}), "CITYBRAIN_API_PORT")


def test_apache_kafka_without_java_says_what_to_install(processes: None, tmp_path: Path) -> None:
    no_java = {"PATH": str(tmp_path)}  # a PATH with no java on it
    one_line_error(citybrain("broker", "--engine", "kafka", "--broker-port", str(free_port()),
                             "--data-dir", str(tmp_path), env=no_java), "Java 17", "install")
    one_line_error(citybrain("up", "--broker-engine", "kafka", "--broker-port", str(free_port()),
                             "--api-port", str(free_port()), "--data-dir", str(tmp_path), env=no_java),
                   "Java 17", "install")
    one_line_error(citybrain("broker", "--engine", "zookeeper"), "CITYBRAIN_BROKER_ENGINE")


def test_api_without_tokens_says_how_to_configure_them(broker: EmbeddedBroker) -> None:
    one_line_error(citybrain("api", "--broker", broker.address, "--api-port", str(free_port())),
                   "CITYBRAIN_API_TOKENS")


def test_help_lists_every_command(processes: None) -> None:
    out = citybrain("--help").stdout
    for cmd in ("up", "broker", "topics", "worker", "api", "simulate"):
        assert cmd in out
