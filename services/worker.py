"""`citybrain worker`: one member of the stream workers' consumer group."""

from __future__ import annotations

import asyncio

import faust

from services.config import Settings
from services.provision import ensure_topics
from streams.agents import register
from streams.app import create_app


def run_worker(settings: Settings, worker_id: str = "0") -> int:
    # Fails with one line when the broker is unreachable, and makes sure no topic the
    # worker touches is left for the broker to auto-create with the wrong partitions.
    asyncio.run(ensure_topics(settings))
    app = create_app(settings, datadir=settings.data_dir / f"worker-{worker_id}")
    register(app, settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True,
                          override_logging=False)
    worker.execute_from_commandline()
    return 0
