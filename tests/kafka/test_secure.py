"""Kafka with TLS and SASL/SCRAM: a KRaft node whose only client listener is SASL_SSL
(its certificate signed by a CA made here with openssl, a SCRAM-SHA-512 user created
with its storage), and the worker and API reaching it with the CITYBRAIN_KAFKA_* settings.
Right credentials work end to end; a wrong password or an untrusted CA ends a process
with one line and a non-zero exit, not a hang."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import orjson
import pytest

from services.config import Settings
from services.kafka_broker import ONE_NODE, KafkaNode
from services.provision import ensure_topics
from streams import kafka_security
from tests.conftest import ROOT, Api, Proc, child_env, event_records, free_port, produce, wait_for
from tests.test_alerts import FEEDER, alerts, normal, outage

USER, PASSWORD = "citybrain", "城市大脑-s3cret"
MECHANISM = "SCRAM-SHA-512"
STOREPASS = "changeit"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_broker_keystore(d: Path, ca: str) -> Path:
    """The broker's key and certificate (for 127.0.0.1, signed by `ca`) as PKCS12."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "broker.key", "-out", "broker.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.pem", cwd=d)
    openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", f"{ca}.pem",
            "-passout", f"pass:{STOREPASS}", "-out", "broker.p12", cwd=d)
    return d / "broker.p12"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "city-ca")
    make_ca(d, "other-ca")  # trusted by nobody here: a client that trusts only it must refuse
    make_broker_keystore(d, "city-ca")
    return d


@pytest.fixture(scope="module")
def broker(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaNode]:
    """One node; clients reach it only on SASL_SSL (the PLAINTEXT listener is the node's own)."""
    port, internal, controller = free_port(), free_port(), free_port()
    config = {
        **ONE_NODE,
        "listeners": f"SASL_SSL://127.0.0.1:{port},PLAINTEXT://127.0.0.1:{internal},"
                     f"CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},PLAINTEXT://127.0.0.1:{internal}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(certs / "broker.p12"),
        "ssl.keystore.password": STOREPASS,
        "ssl.key.password": STOREPASS,
    }
    node = KafkaNode(port, tmp_path_factory.mktemp("kafka-secure"), controller_port=controller, config=config,
                     format_args=("--add-scram", f"{MECHANISM}=[name={USER},password={PASSWORD}]"))
    node.start()
    yield node
    node.stop()


@pytest.fixture
def settings(broker: KafkaNode, certs: Path, tmp_path: Path) -> Settings:
    """The suite's settings, over SASL_SSL; the password in a file, as a mounted secret."""
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    s = Settings(broker=broker.address, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=4,
                 data_dir=tmp_path, session_timeout_s=2.0, max_batch=1000,
                 kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=MECHANISM,
                 kafka_sasl_username=USER, kafka_sasl_password_file=secret,
                 kafka_ssl_cafile=certs / "city-ca.pem")
    kafka_security.use(s.bootstrap, s.kafka_security())  # for this test process's own clients
    asyncio.run(ensure_topics(s))
    return s


def test_worker_and_api_over_sasl_ssl_make_windows_and_an_alert(
        settings: Settings, start_worker: Callable[..., Proc], start_api: Callable[[], Api]) -> None:
    produce(settings, settings.topics.registry, [(b"F-0001", orjson.dumps(FEEDER))])
    start_worker()
    api = start_api()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=90)
    produce(settings, settings.topics.events("grid"), event_records(normal(0, 60) + outage(60, 120), "feeder_id"))

    firing = wait_for(lambda: alerts(api, status="firing", rule="grid.outage"), timeout=90)
    assert [(a["entity"], a["severity"]) for a in firing] == [("F-0001", "critical")]
    windows = wait_for(lambda: api.get("/api/v1/entities/grid/F-0001").json()["windows"], timeout=30)
    assert windows[0]["start"] == 1_795_219_200_000 and windows[0]["figures"]


def run_cli(settings: Settings, *argv: str, timeout: float = 90.0) -> tuple[int, str, float]:
    began = time.monotonic()
    env = child_env(settings, CITYBRAIN_API_TOKENS="t=viewer", CITYBRAIN_WEBHOOK_URLS="http://127.0.0.1:9/hook")
    done = subprocess.run([sys.executable, "-m", "services.cli", *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr, time.monotonic() - began


@pytest.mark.parametrize("command", ["worker", "api", "topics", "notify"])
@pytest.mark.parametrize("fault", ["wrong password", "untrusted CA"])
def test_wrong_password_or_untrusted_ca_is_one_line_and_a_nonzero_exit(
        settings: Settings, certs: Path, command: str, fault: str) -> None:
    secret = settings.kafka_sasl_password_file
    assert secret is not None
    if fault == "wrong password":
        secret.write_text("not-the-password")
        bad = settings
    else:
        bad = replace(settings, kafka_ssl_cafile=certs / "other-ca.pem")
    code, err, took = run_cli(bad, command, *(["--api-port", str(free_port())] if command == "api" else []))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and took < 60, (code, took, err[-2000:])
    assert lines and lines[-1].startswith("citybrain: error:"), err[-2000:]
    why = "password" if fault == "wrong password" else "certificate"
    assert why in lines[-1] and settings.bootstrap in lines[-1], lines[-1]
