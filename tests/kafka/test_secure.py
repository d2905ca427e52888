"""Kafka with TLS and SASL/SCRAM: a KRaft node whose only client listener is SASL_SSL
(its CA and certificate made by deploy/kafka/make-secrets.sh, a SCRAM-SHA-512 user
created with its storage), and the worker and API reaching it with the CITYBRAIN_KAFKA_* settings.
Right credentials work end to end; a wrong password or an untrusted CA ends a process
with one line and a non-zero exit, not a hang."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
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


def make_secrets(d: Path) -> Path:
    """The pilot's own script (deploy/kafka/make-secrets.sh): a CA and the broker's keystore."""
    subprocess.run(["bash", str(ROOT / "deploy" / "kafka" / "make-secrets.sh"), str(d), "127.0.0.1"],
                   check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_secrets(tmp_path_factory.mktemp("secrets"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing of this broker's: a client trusting only it must refuse."""
    return make_secrets(tmp_path_factory.mktemp("other")) / "ca.pem"


def jaas_login(path: Path) -> str:
    """A JAAS file's one login module, as Kafka's inline `sasl.jaas.config` wants it."""
    text = path.read_text()
    return " ".join(text[text.index("{") + 1:text.rindex("}")].split())


@dataclass
class Secured:
    node: KafkaNode
    mutual_tls: str  # HOST:PORT of a listener that wants a client certificate


@pytest.fixture(scope="module")
def broker(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """One node; clients reach it on SASL_SSL, or on SSL with a client certificate signed
    by the same CA (the PLAINTEXT listener is the node's own, for itself)."""
    port, mtls, internal, controller = free_port(), free_port(), free_port(), free_port()
    store_password = (certs / "broker-store-password").read_text().strip()
    config = {
        **ONE_NODE,
        "listeners": f"SASL_SSL://127.0.0.1:{port},SSL://127.0.0.1:{mtls},PLAINTEXT://127.0.0.1:{internal},"
                     f"CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},SSL://127.0.0.1:{mtls},"
                                f"PLAINTEXT://127.0.0.1:{internal}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": f"{MECHANISM},PLAIN",
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        # PLAIN with the user list make-secrets.sh writes for the compose broker
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas_login(certs / "kafka_server_jaas.conf"),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(certs / "broker.p12"),
        "ssl.keystore.password": store_password,
        "ssl.key.password": store_password,
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.ssl.ssl.truststore.type": "PEM",
        "listener.name.ssl.ssl.truststore.location": str(certs / "ca.pem"),
    }
    node = KafkaNode(port, tmp_path_factory.mktemp("kafka-secure"), controller_port=controller, config=config,
                     format_args=("--add-scram", f"{MECHANISM}=[name={USER},password={PASSWORD}]"))
    node.start()
    yield Secured(node, f"127.0.0.1:{mtls}")
    node.stop()


@pytest.fixture
def settings(broker: Secured, certs: Path, tmp_path: Path) -> Iterator[Settings]:
    """The suite's settings, over SASL_SSL; the password in a file, as a mounted secret."""
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    s = Settings(broker=broker.node.address, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=4,
                 data_dir=tmp_path, session_timeout_s=2.0, max_batch=1000,
                 kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=MECHANISM,
                 kafka_sasl_username=USER, kafka_sasl_password_file=secret,
                 kafka_ssl_cafile=certs / "ca.pem")
    kafka_security.use(s.bootstrap, s.kafka_security())  # for this test process's own clients
    asyncio.run(ensure_topics(s))
    yield s
    kafka_security.use(s.bootstrap, kafka_security.PLAINTEXT)  # the port may serve a plain broker later


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
@pytest.mark.parametrize("fault, says", [
    ("wrong password", "it refused the user name or password of 'citybrain'"),
    ("untrusted CA", "its TLS certificate is not signed by the CAs in"),
    ("another host name", "its TLS certificate is not for the name or address clients use"),
])
def test_wrong_password_or_untrusted_certificate_is_one_line_and_a_nonzero_exit(
        settings: Settings, other_ca: Path, command: str, fault: str, says: str) -> None:
    secret = settings.kafka_sasl_password_file
    assert secret is not None
    if fault == "wrong password":
        secret.write_text("not-the-password")
        bad = settings
    elif fault == "untrusted CA":
        bad = replace(settings, kafka_ssl_cafile=other_ca)
    else:  # the certificate names 127.0.0.1 only
        bad = replace(settings, broker=settings.bootstrap.replace("127.0.0.1", "localhost"))
    code, err, took = run_cli(bad, command, *(["--api-port", str(free_port())] if command == "api" else []))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and took < 60, (code, took, err[-2000:])
    assert lines and lines[-1].startswith(f"citybrain: error: cannot reach Kafka at {bad.bootstrap}: {says}"), \
        err[-2000:]


def client_certificate(certs: Path, d: Path) -> tuple[Path, Path]:
    """A client certificate signed by the city's CA, and its key."""
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=citybrain-worker",
                    "-keyout", str(d / "client.key"), "-out", str(d / "client.csr")], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(d / "client.csr"), "-CA", str(certs / "ca.pem"),
                    "-CAkey", str(certs / "ca.key"), "-CAcreateserial", "-days", "1", "-out", str(d / "client.pem")],
                   check=True, capture_output=True)
    return d / "client.pem", d / "client.key"


def test_mutual_tls_with_the_client_certificate_and_refused_without(
        settings: Settings, broker: Secured, certs: Path, tmp_path: Path) -> None:
    certfile, keyfile = client_certificate(certs, tmp_path)
    mtls = replace(settings, broker=broker.mutual_tls, kafka_security_protocol="SSL", kafka_sasl_username=None,
                   kafka_sasl_password_file=None, kafka_ssl_certfile=certfile, kafka_ssl_keyfile=keyfile)
    code, err, _ = run_cli(mtls, "topics")
    assert code == 0, err[-2000:]
    code, err, took = run_cli(replace(mtls, kafka_ssl_certfile=None, kafka_ssl_keyfile=None), "topics")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and took < 60, err[-2000:]
    assert lines[-1].startswith(f"citybrain: error: cannot reach Kafka at {broker.mutual_tls}")
    assert "CITYBRAIN_KAFKA_SSL_CERTFILE" in lines[-1], lines[-1]


def test_sasl_plain_with_the_compose_brokers_user_list(settings: Settings, certs: Path) -> None:
    """The mechanism and files of deploy/docker-compose.sasl-ssl.yml: PLAIN inside TLS, the
    password from make-secrets.sh's kafka-password, checked by its kafka_server_jaas.conf."""
    plain = replace(settings, kafka_sasl_mechanism="PLAIN", kafka_sasl_password_file=certs / "kafka-password")
    code, err, _ = run_cli(plain, "topics")
    assert code == 0, err[-2000:]
