"""Latency: an event produced → its alert on `WS /api/v1/alerts/live`, under load.

The stack is `citybrain up --simulate RATE` as a child process (embedded broker, topics,
one worker, one API and the live simulator, event time = now), the same command and code
paths a city runs. Probes go beside the simulator's load: each a `gate.pass` with a
fever temperature on a probe gate (`P-00000`, `P-00001`, …), which the `gate.fever` rule
turns into an alert at once. A WebSocket client of the live feed notes when each probe's
alert arrives; latency is that arrival minus the moment the probe was handed to the
producer, both on this process's monotonic clock.

The probe gates are a pool, each used again after `PROBE_GATE_CYCLE_S` (`probe_passes`).
Every tenth of a cycle after its probe a normal pass goes to its gate: the rule resolves
the alert once the temperature has been normal for its `clear_s` (60 s, so two or three
passes in), a pass about a minute keeps the gate clear of `gate.offline` (90 s), and the
next probe comes long after the alert lifecycle's 300 s flap window, so it raises a new
alert rather than reopening the last one. A probe's alert is known by gate and the time
its episode started (the probe's event time), in whatever state it arrives: the live
feed carries an alert's last state of a batch, which for a stack far behind may already
be resolved, and such a probe is late, not lost. A
gate of its own per probe would leave a soak with thousands of silent gates and open
alerts that no city has, growing the worker's state and its incidents for as long as it
runs. The last probes of a run end with their fevers open: the run is over.

Probes are sent open-loop at jittered intervals (never waiting for an answer, and not in
step with the simulator's once-a-second bursts), so a slow alert doesn't thin out the
probes around it. `soak.py` uses the same `LiveStack`, `Lag` and `Prober`.

`search` finds the highest rate a fresh stack keeps up with, halving or doubling a start
rate, and measures the latency there and at a target rate; while the probes go, it
meters what the stack writes to the broker per input (benchmarks/broker_writes.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from websockets.asyncio.client import connect

from api.views import Vitals
from benchmarks import broker_writes
from services.config import Settings
from services.processes import spawn, stop
from streams.alerting import ms
from streams.kafka_security import client_options
from streams.topics import DOMAINS
from streams.topicview import TopicView
from streams.watermarks import end_offsets, uncommitted

ROOT = Path(__file__).resolve().parents[1]
FEVER_C = 38.2  # above gate.fever's 37.3 °C threshold: the rule fires on the first pass
NORMAL_C = 36.5  # below it: the passes that resolve a probe's alert
PROBE_GATE_CYCLE_S = 600.0  # a probe gate is used again after this long (module docstring)
# Probes further apart would leave too few of them in a tenth of a cycle to space a gate's
# passes under gate.offline's 90 s (tests/test_benchmarks.py, with the ±50 % jitter).
MAX_PROBE_EVERY_S = 10.0
READY_TIMEOUT_S = 300.0  # a city sized for 10k events/s takes a while to register
# Keeping up: less than this many seconds of load not yet processed. The simulator sends
# each second's events at once, so even a stack that keeps up is up to a second behind.
KEEPING_UP_S = 3.0
PRODUCED_SHARE = 0.9  # of the rate asked for, that the simulator must have produced


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_broker_port() -> int:
    """A free port whose next one is free too: a Kafka node's controller listens there
    (services/kafka_broker.py), and one taken made a run fail at its start."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@dataclass
class LiveStack:
    """`citybrain up --simulate rate` in `workdir`, on free ports, with one viewer token."""

    workdir: Path
    rate: float
    engine: str = "embedded"  # the broker `up` runs: embedded or kafka
    settings: Settings = field(init=False)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def __post_init__(self) -> None:
        self.settings = Settings(broker_port=free_broker_port(), api_port=free_port(), data_dir=self.workdir,
                                 simulate=self.rate, api_tokens=f"{self.token}=viewer", broker_engine=self.engine)
        self.log = self.workdir / "up.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LiveStack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
        env.update(self.settings.environ())
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = spawn([sys.executable, "-m", "services.cli", "up"], env=env, cwd=ROOT, output=out)
        try:
            self._wait_ready()
        except BaseException:
            stop(self.proc, grace_s=30.0)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.proc, grace_s=30.0)  # up stops its children one by one, each with a grace

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"citybrain up exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.settings.api_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API was not ready within {READY_TIMEOUT_S:g}s; see {self.log}")
            time.sleep(1.0)

    def stopped_by_itself(self) -> str | None:
        """Why `up` is stopping or stopped on its own, if it is: its one line saying so (a
        part died, or the embedded broker outgrew its memory limit), or its exit code."""
        said = [line for line in self.log.read_text(errors="replace").splitlines()
                if line.startswith(("citybrain: error", "citybrain: stopping"))] if self.log.exists() else []
        if said:
            return said[-1]
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"citybrain up exited with code {self.proc.returncode}"

    def pids(self) -> dict[str, int]:
        """The worker's, the API's and the broker's process ids, among up's children (the
        embedded broker's binary, or Apache Kafka's JVM)."""
        found = {}
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in map(int, children):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"services.cli" in argv:
                found[argv[argv.index(b"services.cli") + 1].decode()] = pid
            elif b"tansu" in argv[0] or b"kafka.Kafka" in argv:
                found["broker"] = pid
        return {"worker": found["worker"], "api": found["api"], "broker": found["broker"]}


class Lag:
    """Event records the workers have not processed yet: each event partition's end offset
    minus the offset the worker last reported done for it on the vitals topic. And the
    consumer group's lag as Kafka tools show it (end minus committed offsets), which also
    counts what is processed but not yet safe: Faust commits only once the state writes
    before it are produced."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.vitals = Vitals()
        self._view = TopicView(settings.bootstrap, settings.topics.vitals, self.vitals.apply)
        topics, n = settings.topics, settings.partitions
        self._parts = {(d, p): TopicPartition(topics.events(d), p) for d in DOMAINS for p in range(n)}

    async def __aenter__(self) -> Lag:
        await self._view.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._view.stop()

    async def offsets(self) -> tuple[int, int]:
        """(records produced to the event topics, records of them not processed yet)."""
        ends = await end_offsets(self.settings.bootstrap, self._parts.values())
        done = self.vitals.partitions
        lag = sum(ends[tp] - done.get(f"{d}/{p}", {}).get("offset", -1) - 1 for (d, p), tp in self._parts.items())
        return sum(ends.values()), lag

    async def uncommitted(self) -> int:
        """Event records past the worker group's committed offsets."""
        return await uncommitted(self.settings.bootstrap, self.settings.topics.app_id, self._parts.values())

    async def settle(self, rate: float, timeout_s: float = 180.0) -> int:
        """Wait until the backlog that built up while the worker joined its group is worked
        off, or until 30 s of load went in without that (the stack can't sustain `rate`);
        the lag then."""
        deadline = time.monotonic() + timeout_s
        while True:
            produced, lag = await self.offsets()
            if ((produced >= 5 * rate and lag < KEEPING_UP_S * rate) or produced >= 30 * rate
                    or time.monotonic() > deadline):
                return lag
            await asyncio.sleep(2.0)

    async def persisting(self, readings: int = 3, every_s: float = 1.0) -> tuple[int, int]:
        """`offsets()`, with the least lag of a few readings a second apart: the simulator
        sends each second's events at once and the worker reports its offsets once a
        second, so one reading may land between the two and see a second's load as backlog."""
        taken = [await self.offsets()]
        for _ in range(readings - 1):
            await asyncio.sleep(every_s)
            taken.append(await self.offsets())
        return taken[-1][0], min(lag for _, lag in taken)

    def processed_eps(self) -> float:
        """Events/s the worker reports processing over the last 10 s."""
        return sum(self.vitals.rates().values())


@dataclass
class Probe:
    entity: str
    event_ms: int  # the probe event's time, when its alert's episode starts
    sent_at: float  # time.monotonic() when handed to the producer
    arrived_at: float | None = None

    @property
    def latency_ms(self) -> float | None:
        return None if self.arrived_at is None else (self.arrived_at - self.sent_at) * 1000


class Prober:
    """Sends fever probes and watches the live feed for their alerts."""

    def __init__(self, stack: LiveStack, seed: int = 7) -> None:
        self.stack = stack
        self.probes: list[Probe] = []
        self._waiting: dict[tuple[str, int], Probe] = {}  # (gate, event time) → a probe awaiting its alert
        self._rng = np.random.default_rng(seed)

    async def __aenter__(self) -> Prober:
        s = self.stack.settings
        self._ws = await connect(s.api_url.replace("http://", "ws://") + "/api/v1/alerts/live")
        await self._ws.send(orjson.dumps({"token": self.stack.token}).decode())
        hello = orjson.loads(await self._ws.recv())
        if hello.get("type") != "hello":
            raise RuntimeError(f"the live feed answered {hello!r}")
        self._reader = asyncio.create_task(self._read())
        self._producer = AIOKafkaProducer(**client_options(s.bootstrap), acks=1, linger_ms=0)
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._ws.close()

    async def _read(self) -> None:
        async for message in self._ws:
            now = time.monotonic()
            doc = orjson.loads(message)
            alert = doc.get("alert") or {}
            if doc["type"] != "alert" or alert.get("rule") != "gate.fever":
                continue
            probe = self._waiting.pop((alert["entity"], ms(alert["started_at"])), None)
            if probe is not None:
                probe.arrived_at = now

    async def send(self, count: int, every_s: float) -> None:
        """`count` probes, one every `every_s` on average (uniformly jittered ±50 %), on a
        pool of gates that each come round again after `PROBE_GATE_CYCLE_S`."""
        if every_s > MAX_PROBE_EVERY_S:
            raise ValueError(f"probes at most {MAX_PROBE_EVERY_S:g} s apart: a probe gate must pass before "
                             "gate.offline's timeout")
        gates = probe_gates(every_s)
        for n in range(count):
            await asyncio.sleep(every_s * self._rng.uniform(0.5, 1.5))
            gate, normal = probe_passes(n, gates)
            probe = Probe(gate, int(time.time() * 1000), time.monotonic())
            self._waiting[gate, probe.event_ms] = probe
            self.probes.append(probe)
            await self._pass(gate, FEVER_C, probe.event_ms)
            for other in normal:
                await self._pass(other, NORMAL_C, int(time.time() * 1000))

    async def _pass(self, gate: str, temperature_c: float, ts: int) -> None:
        event = {"type": "gate.pass", "ts": ts, "gate_id": gate, "direction": "in", "method": "face",
                 "result": "granted", "subject": "probe", "temperature_c": temperature_c}
        await self._producer.send(self.stack.settings.topics.events("gate"), orjson.dumps(event),
                                  key=gate.encode())

    async def arrived(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for every probe's alert."""
        deadline = time.monotonic() + timeout_s
        while self._waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.2)


def probe_gates(every_s: float) -> int:
    """How many probe gates a cycle of probes every `every_s` takes."""
    return max(10, round(PROBE_GATE_CYCLE_S / every_s))


def probe_passes(n: int, gates: int) -> tuple[str, list[str]]:
    """The gate of the `n`-th probe (counting from 0) of a pool of `gates`, and the gates
    that get a normal pass beside it: those whose probe was a tenth, two tenths … nine
    tenths of a cycle before."""
    back = [k * gates // 10 for k in range(1, 10)]
    return _gate(n % gates), [_gate((n - b) % gates) for b in back if n >= b]


def _gate(i: int) -> str:
    return f"P-{i:05d}"


def percentiles(probes: list[Probe]) -> dict[str, Any]:
    """p50/p99/max of the probes' latencies in ms, and how many arrived of how many sent."""
    done = [p.latency_ms for p in probes if p.latency_ms is not None]
    figures = (np.percentile(done, [50, 99]).tolist() + [max(done)]) if done else [None] * 3
    return {"probes": len(probes), "arrived": len(done),
            **{k: None if v is None else round(v, 1) for k, v in zip(("p50_ms", "p99_ms", "max_ms"), figures)}}


def next_rate(tried: list[tuple[float, bool]], start: float, top: float, floor: float) -> float | None:
    """The next live rate to try, given the (rate, kept up?) tried so far: `start` first;
    twice the last while every rate kept up (up to `top`), half while none did (down to
    `floor`); None once the highest rate kept up with is bracketed, or at the bounds."""
    if not tried:
        return start
    rate = tried[-1][0]
    if all(ok for _, ok in tried):
        return rate * 2 if rate * 2 <= top else None
    if not any(ok for _, ok in tried):
        return rate / 2 if rate / 2 >= floor else None
    return None


def search(workdir: Path, start: float, target: float, probes: int, top: float, floor: float,
           every_s: float = 0.25, engine: str = "embedded") -> dict[str, Any]:
    """The highest live rate the stack keeps up with, among `start` doubled or halved
    (`next_rate`), with the latency of `probes` fever probes there; and the latency at
    `target` whether it keeps up or not (tried on its own if the search passed it by).

    The pipeline's rate comes from pre-loaded topics, read in big batches; live load
    arrives in small ones, which cost more per event. A rate that is not kept up with is
    only probed if it is `target`: elsewhere latency would measure a growing backlog."""
    attempts: list[dict[str, Any]] = []
    rate: float | None = start
    while rate is not None:
        attempts.append(attempt(workdir / f"attempt-{len(attempts)}", round(rate), probes, every_s, engine,
                                probe_behind=round(rate) == target))
        rate = next_rate([(a["rate"], a["sustained"]) for a in attempts], start, top, floor)
    if target not in (a["rate"] for a in attempts):
        attempts.append(attempt(workdir / f"attempt-{len(attempts)}", target, probes, every_s, engine,
                                probe_behind=True))
    kept = [a for a in attempts if a["sustained"]]
    return {"live_eps": max((a["rate"] for a in kept), default=None),
            "best": max(kept, key=lambda a: a["rate"], default=None),
            "at_target": next(a for a in attempts if a["rate"] == target), "attempts": attempts}


def attempt(workdir: Path, rate: float, probes: int, every_s: float, engine: str,
            probe_behind: bool) -> dict[str, Any]:
    """One `citybrain up --simulate rate`: does it keep up, and (if so, or `probe_behind`)
    the probes' latency and what it wrote to the broker meanwhile."""
    stack = LiveStack(workdir, rate, engine)
    try:
        with stack:
            return asyncio.run(_measure(stack, probes, every_s, probe_behind))
    except RuntimeError as exc:  # aiokafka's errors too: a stack that didn't start or didn't last
        return {"rate": rate, "sustained": False, "error": stack.stopped_by_itself() or str(exc)}


async def _measure(stack: LiveStack, count: int, every_s: float, probe_behind: bool) -> dict[str, Any]:
    s = stack.settings
    async with Lag(s) as lag, Prober(stack) as prober:
        # Events produced while the worker joined its group are a backlog, not load.
        backlog = await lag.settle(stack.rate)
        out: dict[str, Any] = {"rate": stack.rate, "lag_at_start": backlog, "load_avg": os.getloadavg()[0]}
        if not probe_behind and backlog >= KEEPING_UP_S * stack.rate:
            return out | {"sustained": False, "processed_eps": round(lag.processed_eps())}
        before = await broker_writes.offsets(s.bootstrap, s.topic_prefix)
        produced, began = (await lag.offsets())[0], time.monotonic()
        await prober.send(count, every_s)
        await prober.arrived(timeout_s=60.0)
        now_produced, behind = await lag.persisting()
        produced_eps = (now_produced - produced) / (time.monotonic() - began)
        out |= {"lag_at_end": behind, "produced_eps": round(produced_eps),
                "processed_eps": round(lag.processed_eps()), "every_s": every_s,
                **percentiles(prober.probes)}
        # Kept up: little left unprocessed, and the simulator did produce the rate (on two
        # busy cores it may not, and a stack can't fall behind load it never got).
        out["sustained"] = behind < KEEPING_UP_S * stack.rate and produced_eps >= PRODUCED_SHARE * stack.rate
        # Live records hold one event each (the simulator's default).
        out["broker_writes"] = await broker_writes.since(s.bootstrap, s.topic_prefix, before,
                                                         [s.topics.events(d) for d in DOMAINS])
        return out
