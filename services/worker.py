"""`citybrain worker`: one member of the stream workers' consumer group."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

import faust

from services.config import Settings
from services.provision import ensure_topics
from streams.agents import register
from streams.app import create_app

# A graceful stop takes about two seconds; one that waits on a dead broker (it died with
# `citybrain up`) would retry for minutes and hold the process and its ports.
SHUTDOWN_GRACE_S = 15.0


class Worker(faust.Worker):
    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        timer = threading.Timer(SHUTDOWN_GRACE_S, self._give_up)
        timer.daemon = True
        timer.start()
        super()._schedule_shutdown(signal)

    @staticmethod
    def _give_up() -> None:
        logging.getLogger(__name__).error("graceful stop took over %gs; exiting", SHUTDOWN_GRACE_S)
        os._exit(1)


def run_worker(settings: Settings, worker_id: str = "0") -> int:
    # Fails with one line when the broker is unreachable, and makes sure no topic the
    # worker touches is left for the broker to auto-create with the wrong partitions.
    asyncio.run(ensure_topics(settings))
    datadir = settings.data_dir / f"worker-{worker_id}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, datadir=datadir)
    register(app, settings)
    worker = Worker(app, loglevel=settings.log_level.upper(), quiet=True, override_logging=False)
    worker.execute_from_commandline()
    return 0
