"""Test fixtures: a real embedded broker per session, real worker and API processes.

Tests share one broker and isolate themselves by topic prefix, because a broker start
is cheap but a consumer-group join is not; every part runs as the same command a user
runs (`python -m services.cli ...`).

Two tiers, by what a test uses: one that asks for the broker (`broker`, `settings`, and
every fixture built on them) or for `processes` (it starts a process of its own) is marked
`broker`; the rest are broker-free and are what `make test-fast` runs. A test that starts a
process without asking for `processes` fails, so it cannot slip into the fast tier.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import settings as hypothesis_settings
from playwright.sync_api import Browser, sync_playwright

from services.broker import EmbeddedBroker
from services.config import Settings
from services.processes import spawn, stop
from services.provision import ensure_topics
from streams.kafka_security import client_options
from streams.topicview import read_to_end

ROOT = Path(__file__).resolve().parents[1]
# token → role[:name] (contract §5): the operators' token is a post's, shared by the
# officers on duty, and "tu" an operator token issued without a name.
TOKENS = {"tv": "viewer", "to": "operator:值班长", "tu": "operator", "ta": "admin", "ti": "ingest",
          # limited to an area (contract §8): a street's duty desk, and another street's community
          "tz": "operator:湛山街道值班员@street:湛山街道", "tc": "operator:太平角社区值班员@community:太平角社区"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kafka", action="store_true",
                     help="run tests/kafka on a 3-broker Apache Kafka cluster (make test-kafka)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # The Kafka tier needs Java and minutes of its own: `make test-kafka`, not `make test`.
    if collection_path == ROOT / "tests" / "kafka" and not config.getoption("--kafka"):
        return True
    return None


# Property tests draw Hypothesis's default number of examples (or a multiple of it); the
# fast tier (`make test-fast`, `--hypothesis-profile=fast`) draws a tenth of that.
hypothesis_settings.register_profile("fast", max_examples=10)

# Fixtures that make a test part of the broker tier; everything built on them does too.
BROKER_TIER = frozenset({"broker", "processes"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker: starts the embedded broker or another process "
                                       "(set by tests/conftest.py from the fixtures a test uses)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_TIER & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def processes() -> None:
    """Ask for this in a test that starts a process itself (a `citybrain` command, a
    broker, Alertmanager, a browser): it puts the test in the broker tier."""


@pytest.fixture(autouse=True)
def _processes_only_when_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if BROKER_TIER & set(request.fixturenames):
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process: ask for the `processes` fixture "
                             "(tests/conftest.py), which puts it in the broker tier")

    # Every way of starting a process (subprocess, asyncio, Playwright) ends up here.
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: last result {result!r}")
        time.sleep(every)


@pytest.fixture(scope="session")
def broker(processes: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(free_port(), tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings for one test: its own topics on the shared broker, provisioned. A small
    batch limit keeps an oversized batch record under Kafka's 1 MB message default."""
    s = Settings(broker=broker.address, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=4,
                 data_dir=tmp_path, session_timeout_s=2.0, max_batch=1000)
    asyncio.run(ensure_topics(s))
    return s


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(settings.environ())
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Proc:
    """A `citybrain` subcommand running as its own process, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = spawn([sys.executable, "-m", "services.cli", *argv], env=env, cwd=ROOT,
                              output=out)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        return stop(self.proc)


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(worker_id: str = "0", **env: str) -> Proc:
        p = Proc(["worker", "--worker-id", worker_id], child_env(settings, **env),
                 tmp_path / f"worker-{worker_id}-{len(procs)}.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def worker(start_worker: Callable[..., Proc]) -> Proc:
    return start_worker()


class Api:
    def __init__(self, proc: Proc, url: str) -> None:
        self.proc, self.url = proc, url

    def get(self, path: str, token: str | None = "tv", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=10, **kw)


def launch_api(settings: Settings, log_dir: Path) -> Api:
    """`citybrain api` on a free port with the test tokens, once it answers."""
    port = free_port()
    spec = ",".join(f"{t}={r}" for t, r in TOKENS.items())
    proc = Proc(["api", "--api-port", str(port)], child_env(settings, CITYBRAIN_API_TOKENS=spec),
                log_dir / f"api-{port}.log")
    a = Api(proc, f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _responds(a), timeout=30)
    except AssertionError:
        proc.stop()
        raise
    return a


@pytest.fixture
def start_api(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], Api]]:
    apis: list[Api] = []

    def start() -> Api:
        apis.append(launch_api(settings, tmp_path))
        return apis[-1]

    yield start
    for a in apis:
        a.proc.stop()


@pytest.fixture
def api(start_api: Callable[[], Api]) -> Api:
    return start_api()


def _responds(a: Api) -> bool:
    if a.proc.proc.poll() is not None:
        raise AssertionError(f"api exited: {a.proc.output()[-2000:]}")
    try:
        return a.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def browser(processes: None) -> Iterator[Browser]:
    """Debian's headless chromium, driven by Playwright (whose own browser builds can't be
    downloaded here). Ask for it after the fixtures that start processes: Playwright's sync
    API keeps an event loop running in this thread, and the Kafka helpers call asyncio.run."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium fonts-noto-cjk; .ci/run does)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium)
        try:
            yield b
        finally:
            b.close()


# ---------------------------------------------------------------- Kafka helpers


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    async def run() -> None:
        # As a gateway that must not lose events writes: acks=all (with acks=1 a leader
        # thawed after a freeze, tests/kafka, acknowledged records it then dropped on
        # learning it had been replaced, and the test blamed the worker for them), every
        # record's delivery checked, and two minutes to ride out a broker's loss (until
        # the controller fences it, a partition can lack its two in-sync replicas).
        p = AIOKafkaProducer(**client_options(settings.bootstrap), linger_ms=5, acks="all",
                             request_timeout_ms=120_000)
        await p.start()
        try:
            sent = [await p.send(topic, value, key=key) for key, value in records]
            await asyncio.gather(*sent)
        finally:
            await p.stop()

    asyncio.run(run())


def event_records(events: list[dict[str, Any]], key_field: str) -> list[tuple[bytes | None, bytes]]:
    return [(e[key_field].encode(), orjson.dumps(e)) for e in events]


def read_all(settings: Settings, topic: str, timeout: float = 10.0) -> list[tuple[bytes | None, Any]]:
    """Everything currently in `topic`, values JSON-decoded, read the way the API reads."""
    records = asyncio.run(read_to_end(settings.bootstrap, topic, timeout))
    return [(k, orjson.loads(v) if v else None) for k, v in records]


def vitals_totals(settings: Settings) -> dict[str, dict[str, int]]:
    latest: dict[bytes | None, Any] = {}
    for key, value in read_all(settings, settings.topics.vitals):
        latest[key] = value
    totals: dict[str, dict[str, int]] = {}
    for doc in latest.values():
        t = totals.setdefault(doc["domain"], {"events": 0, "rejected": 0, "records": 0})
        for k in t:
            t[k] += doc[k]
    return totals
