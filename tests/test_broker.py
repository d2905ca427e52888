"""The embedded broker and topic provisioning, against the real Tansu binary."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.broker import BrokerError, EmbeddedBroker
from services.processes import port_in_use, port_open
from services.provision import connect_admin, ensure_topics
from services.config import Settings
from tests.conftest import ROOT, free_port, wait_for


def test_starts_listens_and_stops_freeing_its_port(processes: None, tmp_path: Path) -> None:
    port = free_port()
    with EmbeddedBroker(port, tmp_path) as b:
        assert port_open("127.0.0.1", port)
        assert b.proc is not None and b.proc.poll() is None
    assert not port_in_use("127.0.0.1", port)


def test_a_busy_port_is_a_clear_error(tmp_path: Path, broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=f"port {broker.port} on 127.0.0.1 is already in use"):
        EmbeddedBroker(broker.port, tmp_path).start()


def test_runs_with_a_clean_environment_ignoring_a_dotenv_and_tansu_variables(processes: None, tmp_path: Path) -> None:
    # Tansu reads .env and LISTENER_URL; neither may redirect the embedded broker.
    (tmp_path / ".env").write_text("LISTENER_URL=tcp://127.0.0.1:1\n")
    port = free_port()
    os.environ["LISTENER_URL"] = "tcp://127.0.0.1:2"
    try:
        with EmbeddedBroker(port, tmp_path):
            assert port_open("127.0.0.1", port)
    finally:
        del os.environ["LISTENER_URL"]


def test_no_orphan_broker_when_its_parent_is_killed(processes: None, tmp_path: Path) -> None:
    port = free_port()
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from services.broker import EmbeddedBroker
        EmbeddedBroker({port}, Path({str(tmp_path)!r})).start()
        print("up", flush=True)
        time.sleep(600)
    """)], cwd=ROOT, stdout=subprocess.PIPE)
    assert parent.stdout is not None and parent.stdout.readline() == b"up\n"
    assert port_open("127.0.0.1", port)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    wait_for(lambda: not port_in_use("127.0.0.1", port), timeout=10)


def test_provisioning_creates_every_topic_explicitly_and_is_idempotent(settings: Settings) -> None:
    # The `settings` fixture already provisioned once.
    assert asyncio.run(ensure_topics(settings)) == []

    async def describe() -> dict[str, int]:
        admin = await connect_admin(settings.bootstrap)
        try:
            names = [s.name for s in settings.topics.specs()]
            return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
        finally:
            await admin.close()

    counts = asyncio.run(describe())
    t = settings.topics
    assert counts[t.events("gate")] == counts[t.events("grid")] == settings.partitions
    assert counts[t.registry] == 1 and counts[t.alerts] == settings.partitions


def test_a_topic_with_the_wrong_partition_count_is_refused(settings: Settings) -> None:
    from dataclasses import replace

    with pytest.raises(BrokerError, match="has 4 partitions, expected 6"):
        asyncio.run(ensure_topics(replace(settings, partitions=6)))
