"""`citybrain`: one command per part of the service, and `up` for all of them at once.

Every flag has a `CITYBRAIN_<NAME>` variable (services.config); flags win. Anything a
person can get wrong (a busy port, an unreachable broker, a bad value) ends in one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine

from services import config, datadir
from services.broker import BrokerError, local_broker
from services.config import ConfigError, Settings
from streams import kafka_security
from streams.events import Invalid

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _flags(p: argparse.ArgumentParser, *names: str) -> None:
    """Declare flags by setting name; each maps onto the Settings field of that name."""
    spec: dict[str, tuple[type, str]] = {
        "broker": (str, "HOST:PORT of an existing Kafka cluster (default: run the embedded broker)"),
        "broker_port": (int, "port of the local broker (default 9092; Apache Kafka's controller takes the next)"),
        "broker_engine": (str, "the local broker: embedded (memory only, default) or kafka (Apache Kafka, durable)"),
        "api_host": (str, "address the HTTP API binds (default 127.0.0.1)"),
        "api_port": (int, "port of the HTTP API (default 8000)"),
        "data_dir": (Path, "where durable local state lives (default ./var)"),
        "topic_prefix": (str, "prefix of every topic (default 'citybrain.')"),
        "partitions": (int, "partitions of the event topics (default 8)"),
        "workers": (int, "stream worker processes (default 1)"),
        "simulate": (float, "run the city simulator at this many events per second"),
        "simulate_batch": (int, "events per record the simulator produces (default 1)"),
        "registry_file": (Path, "JSON array or JSON Lines of registry entities"),
        "store": (str, "worker table store: memory or rocksdb (default memory)"),
        "rules_file": (Path, "YAML or JSON overrides of the rule catalogue's thresholds"),
        "log_level": (str, "debug, info, warning or error (default info)"),
    }
    for name in names:
        kind, help_ = spec[name]
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=help_)


def _settings(args: argparse.Namespace) -> Settings:
    # Flags that are not settings (--seed, --worker-id, ...) are ignored here.
    s = config.load().with_overrides(**vars(args))
    datadir.narrow(s.data_dir)
    kafka_security.use(s.bootstrap, s.kafka_security())
    return s


def _wait_for_signal() -> None:
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()


# ---------------------------------------------------------------- commands


def cmd_broker(args: argparse.Namespace) -> int:
    s = _settings(args)
    kind = "Apache Kafka, durable under" if s.broker_engine == "kafka" else "embedded broker, memory only; log in"
    with local_broker(s.broker_engine, s.broker_port, s.data_dir) as broker:
        print(f"{s.broker_engine} broker listening on {broker.address} ({kind} {broker.workdir})",
              flush=True)
        _wait_for_signal()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from services.provision import ensure_topics, publish_registry

    s = _settings(args)
    created = asyncio.run(ensure_topics(s))
    print(f"{len(created)} topics created, {len(s.topics.specs()) - len(created)} already present "
          f"on {s.bootstrap}")
    if s.registry_file is not None:
        n = asyncio.run(publish_registry(s))
        print(f"{n} registry entities published to {s.topics.registry}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from services.worker import run_worker

    return run_worker(_settings(args), args.worker_id)


def cmd_api(args: argparse.Namespace) -> int:
    from services.apiserver import run_api

    return run_api(_settings(args))


def cmd_simulate(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaConnectionError

    from services.provision import ensure_topics
    from services.simulator import run_simulator
    from services.units import run_units

    s = _settings(args)
    if args.fast and args.duration is None:
        raise ConfigError("--fast needs --duration (simulated seconds to produce)")

    async def simulate() -> None:
        await ensure_topics(s)
        units = asyncio.ensure_future(run_units(s.bootstrap, s.topics, args.seed)) if args.handle else None
        try:
            await run_simulator(s.bootstrap, s.topics, rate=s.simulate or 1000.0,
                                batch=s.simulate_batch, seed=args.seed, truth_path=args.truth,
                                duration_s=args.duration, fast=args.fast)
        finally:
            if units is not None:
                units.cancel()
                await asyncio.gather(units, return_exceptions=True)

    try:
        asyncio.run(_until_signalled(simulate()))
    except KafkaConnectionError:
        raise BrokerError(f"cannot reach Kafka at {s.bootstrap}") from None
    return 0


async def _until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Run `work`, cancelling it on SIGINT/SIGTERM so it can flush what it produced."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def cmd_notify(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaConnectionError

    from services.notifier import run_notifier

    s = _settings(args)
    try:
        asyncio.run(_until_signalled(run_notifier(s)))
    except KafkaConnectionError:
        raise BrokerError(f"cannot reach Kafka at {s.bootstrap}") from None
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from services.stack import Stack

    return Stack(_settings(args), handle=args.handle).run()


# ---------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="citybrain", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = ("broker", "topic_prefix", "partitions", "data_dir", "log_level")

    p = sub.add_parser("up", help="run broker, topics, workers, API (and simulator) on this machine")
    _flags(p, *common, "broker_port", "broker_engine", "api_host", "api_port", "workers", "simulate",
           "simulate_batch", "registry_file", "store", "rules_file")
    p.add_argument("--handle", action="store_true", help="with --simulate: simulated units handle the cases")
    p.set_defaults(run=cmd_up)

    p = sub.add_parser("broker", help="run the local broker alone (embedded, or Apache Kafka with --engine kafka)")
    _flags(p, "broker_port", "data_dir", "log_level")
    p.add_argument("--engine", dest="broker_engine", default=None,
                   help="embedded (memory only, default) or kafka (Apache Kafka, durable under DATA_DIR/kafka)")
    p.set_defaults(run=cmd_broker)

    p = sub.add_parser("topics", help="create every topic (idempotent); publish a registry file")
    _flags(p, *common, "broker_port", "registry_file")
    p.set_defaults(run=cmd_topics)

    p = sub.add_parser("worker", help="run one stream worker of the consumer group")
    _flags(p, *common, "broker_port", "store", "registry_file", "rules_file")
    p.add_argument("--worker-id", default="0", help="names this worker's local state directory")
    p.set_defaults(run=cmd_worker)

    p = sub.add_parser("api", help="run one HTTP API replica")
    _flags(p, *common, "broker_port", "api_host", "api_port", "registry_file")
    p.set_defaults(run=cmd_api)

    p = sub.add_parser("notify", help="deliver alerts to CITYBRAIN_WEBHOOK_URLS and CITYBRAIN_ALERTMANAGER_URL")
    _flags(p, *common, "broker_port")
    p.set_defaults(run=cmd_notify)

    p = sub.add_parser("simulate", help="produce a synthetic city's events")
    _flags(p, *common, "broker_port", "simulate_batch")
    p.add_argument("--rate", dest="simulate", type=float, default=None,
                   help="events per second (default 1000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--truth", type=Path, default=None,
                   help="write the injected anomalies' ground truth to this JSONL file")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--fast", action="store_true",
                   help="produce simulated time as fast as possible instead of in real time")
    p.add_argument("--handle", action="store_true",
                   help="simulated units accept, handle and close the cases, some late (services/units.py)")
    p.set_defaults(run=cmd_simulate)
    return top


# Every citybrain process holds its state and read models as a great many small dicts
# with no reference cycles among them. At the default thresholds (700, 10, 10) the
# cyclic collector walked them again and again: 15-18 % of a worker's time under `make
# bench` (py-spy), 5 % after this. Collections a hundred times rarer still collect every
# cycle, in fewer and larger steps.
GC_THRESHOLDS = (50_000, 20, 100)


def main(argv: list[str] | None = None) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    datadir.private_from_now()
    args = parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    level = getattr(args, "log_level", None) or os.environ.get(config.env_name("log_level")) or "info"
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except ConfigError as exc:
        print(f"citybrain: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BrokerError, Invalid, OSError) as exc:
        print(f"citybrain: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
