"""`citybrain up`: the whole service on one machine, as child processes of one supervisor.

Each part runs as the same command a real deployment would run on its own (`citybrain
worker`, `citybrain api`, `citybrain simulate`), so `up` exercises exactly the
production code paths. Children die with the supervisor, even on `kill -9`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services import tokens
from services.broker import LocalBroker, local_broker
from services.broker_memory import BrokerMemoryWatch, Verdict, limits, machine_memory_mb
from services.config import ConfigError, Settings, env_name
from services.processes import port_in_use, rss_bytes, spawn, stop
from services.provision import ensure_topics, publish_registry

READY_TIMEOUT_S = 90.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path | None


class Stack:
    def __init__(self, settings: Settings, handle: bool = False) -> None:
        self.settings = settings
        self.handle = handle  # the simulator's units handle cases
        self.broker: LocalBroker | None = None
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def run(self) -> int:
        s = self.settings
        if port_in_use(s.api_host, s.api_port):
            raise ConfigError(f"api_port (CITYBRAIN_API_PORT): port {s.api_port} on {s.api_host} "
                              "is already in use")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            return self._run()
        finally:
            self.shutdown()

    def _run(self) -> int:
        s = self.settings
        (s.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if s.embedded:
            if s.broker_engine == "embedded":
                # The broker starts empty: a worker's local (rocksdb) tables from an earlier run
                # would claim offsets the new topics don't have, and records would be skipped.
                for stale in s.data_dir.glob("worker-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            self.broker = local_broker(s.broker_engine, s.broker_port, s.data_dir).start()
            # Supervised like the other parts: with the local broker gone, nothing works.
            assert self.broker.proc is not None
            self.children.append(Child("broker", self.broker.proc, self.broker.log_path))
        asyncio.run(ensure_topics(s))
        if s.registry_file is not None:
            asyncio.run(publish_registry(s))
        env = self._child_env()
        for i in range(s.workers):
            port = {env_name("worker_metrics_port"): str(s.worker_metrics_port + i)} if s.worker_metrics_port else {}
            self._start(f"worker-{i}", ["worker", "--worker-id", str(i)], {**env, **port})
        api_env = {**env, **self._token_env()}  # only the process serving HTTP holds tokens
        self._start("api", ["api"], api_env)
        if s.webhooks or s.alertmanager_url:
            self._start("notifier", ["notify"], env)
        if s.simulate:
            self._start("simulator", ["simulate"] + ["--handle"] * self.handle, env, to_terminal=True)

        print(f"citybrain up\n"
              f"  broker   {s.bootstrap}{self._broker_note()}\n"
              f"  api      {s.api_url}  (docs {s.api_url}/docs)\n"
              f"  tokens   {api_env.get(env_name('token_file'), 'from CITYBRAIN_API_TOKENS')}\n"
              f"  logs     {s.data_dir / 'logs'}\n"
              f"  workers  {s.workers}, simulator "
              f"{f'{s.simulate:g} events/s' if s.simulate else 'off'}, notifier "
              f"{'on' if s.webhooks or s.alertmanager_url else 'off'}", flush=True)
        if self._wait_ready():
            print(f"ready: {s.api_url}/readyz is 200", flush=True)
        return self._supervise()

    def _broker_note(self) -> str:
        if self.broker is None:
            return ""
        if self.settings.broker_engine == "kafka":
            return f" (Apache Kafka, durable under {self.broker.workdir})"
        return " (embedded, memory only)"

    def _child_env(self) -> dict[str, str]:
        """Every child's environment: the settings, less the API tokens."""
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
        env.update(s.environ())
        env[env_name("broker")] = s.bootstrap
        for name in ("api_tokens", "token_file"):
            env.pop(env_name(name), None)
        return env

    def _token_env(self) -> dict[str, str]:
        """The API tokens for the process that serves HTTP, generated if none are set."""
        s = self.settings
        if s.api_tokens:
            return {env_name("api_tokens"): s.api_tokens}
        path = s.token_file or s.data_dir / "tokens"
        if not path.exists():
            tokens.generate(path)
        return {env_name("token_file"): str(path.resolve())}

    def _start(self, name: str, argv: list[str], env: dict[str, str], to_terminal: bool = False) -> None:
        argv = [sys.executable, "-m", "services.cli", *argv]
        if to_terminal:
            self.children.append(Child(name, spawn(argv, env=env), None))
            return
        log = self.settings.data_dir / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            self.children.append(Child(name, spawn(argv, env=env, output=out), log))

    def _wait_ready(self) -> bool:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"{self.settings.api_url}/readyz"
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self._dead_child():
                return False
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            self.stopping.wait(0.5)
        return False

    def _dead_child(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def _supervise(self) -> int:
        watch = self._broker_watch()
        while not self.stopping.wait(0.5):
            dead = self._dead_child()
            if dead is not None:
                where = f"; see {dead.log}" if dead.log else ""
                if dead.name == "simulator" and dead.proc.returncode == 0:
                    self.children.remove(dead)
                    continue
                print(f"citybrain: error: {dead.name} exited with code {dead.proc.returncode}{where}",
                      file=sys.stderr)
                return 1
            verdict = self._judge_broker_memory(watch)
            if verdict is not None:
                print(verdict.line, file=sys.stderr, flush=True)
                if verdict.stop:
                    return 1
        print("stopping ...", flush=True)
        return 0

    def _broker_watch(self) -> BrokerMemoryWatch | None:
        s = self.settings
        if self.broker is None:
            return None  # Apache Kafka: retention and compaction bound its memory
        return BrokerMemoryWatch(limits(machine_memory_mb(), s.broker_memory_warn_mb, s.broker_memory_limit_mb))

    def _judge_broker_memory(self, watch: BrokerMemoryWatch | None) -> Verdict | None:
        if watch is None or self.broker is None or self.broker.proc is None:
            return None
        try:
            rss = rss_bytes(self.broker.proc.pid)
        except OSError:  # it just exited: the next look at the children reports that
            return None
        return watch.sample(time.monotonic(), rss / (1 << 20))

    def shutdown(self) -> None:
        # Producers first, so the workers can drain what was produced; the broker last.
        for child in reversed(self.children):
            stop(child.proc)
        self.children.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
