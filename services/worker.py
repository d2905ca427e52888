"""`citybrain worker`: one member of the stream workers' consumer group."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, start_http_server

from services.config import ConfigError, Settings
from services.processes import port_in_use
from services.provision import ensure_topics
from streams import watchdog
from streams.agents import register
from streams.app import create_app
from streams.incident_agents import register_command
from streams.transport import Worker


def _serve_metrics(settings: Settings) -> Counter:
    """The worker's own /metrics (on CITYBRAIN_WORKER_METRICS_PORT, when set): what only
    this process knows, its stalled partitions; the city's figures are the API's."""
    registry = CollectorRegistry()
    stalls = Counter("citybrain_partition_stalls", "Partitions of this worker found with records to "
                     "read but not moving on for the watchdog's stall time; each was then read again "
                     "from its committed offset", ["topic", "partition"], registry=registry)
    port, host = settings.worker_metrics_port, settings.api_host
    if port:
        if port_in_use(host, port):
            raise ConfigError(f"worker_metrics_port (CITYBRAIN_WORKER_METRICS_PORT): port {port} on {host} "
                              "is already in use")
        start_http_server(port, host, registry)
    return stalls


def run_worker(settings: Settings, worker_id: str = "0") -> int:
    # Fails with one line when the broker is unreachable, and makes sure no topic the
    # worker touches is left for the broker to auto-create with the wrong partitions.
    asyncio.run(ensure_topics(settings))
    datadir = settings.data_dir / f"worker-{worker_id}"
    datadir.mkdir(parents=True, exist_ok=True)
    stalls = _serve_metrics(settings)
    app = create_app(settings, datadir=datadir)
    register(app, settings)
    register_command(app, settings)
    watchdog.install(app, settings.bootstrap, lambda topic, partition: stalls.labels(topic, str(partition)).inc())
    worker = Worker(app, loglevel=settings.log_level.upper(), quiet=True, override_logging=False)
    worker.execute_from_commandline()
    return 0
