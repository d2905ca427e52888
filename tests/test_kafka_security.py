"""TLS and SASL settings, broker-free: what each client is given, and the one-line errors
for settings that can't work (the real SASL_SSL broker is in tests/kafka/test_secure.py)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest

from services.config import ConfigError, load
from streams import kafka_security
from streams.app import faust_credentials
from streams.kafka_security import KafkaSecurity, client_options, unreachable

SASL = {"CITYBRAIN_BROKER": "kafka-1:9093,kafka-2:9093", "CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CITYBRAIN_KAFKA_SASL_USERNAME": "citybrain", "CITYBRAIN_KAFKA_SASL_PASSWORD": "pw"}


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA certificate, a client certificate and key, an encrypted key, and a non-PEM file."""
    d = tmp_path_factory.mktemp("pem")
    for name, extra in (("ca", ["-nodes"]), ("client", ["-nodes"]), ("locked", ["-passout", "pass:secret"])):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", *extra, "-days", "1",
                        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem"],
                       cwd=d, check=True, capture_output=True)
    (d / "garbage.pem").write_text("not a certificate\n")
    return d


def test_plaintext_clients_get_exactly_what_they_got_before() -> None:
    s = load({"CITYBRAIN_BROKER": "plain:9092"})
    assert s.kafka_security() == KafkaSecurity()
    assert faust_credentials(s.kafka_security()) is None
    assert client_options("plain:9092") == {"bootstrap_servers": "plain:9092"}


def test_sasl_ssl_gives_every_client_a_verifying_tls_context_and_the_scram_user(pem: Path) -> None:
    s = load({**SASL, "CITYBRAIN_KAFKA_SSL_CAFILE": str(pem / "ca.pem")})
    kafka_security.use(s.bootstrap, s.kafka_security())
    # any one of the cluster's addresses, as Faust's transport and the watchdog know it
    opts = client_options("kafka-2:9093")
    ctx = opts.pop("ssl_context")
    assert opts == {"bootstrap_servers": "kafka-2:9093", "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "citybrain",
                    "sasl_plain_password": "pw"}
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    creds = faust_credentials(s.kafka_security())
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.ssl_context is not None
    assert client_options("elsewhere:9092") == {"bootstrap_servers": "elsewhere:9092"}


def test_sasl_plaintext_has_no_tls_and_ssl_has_no_sasl(pem: Path) -> None:
    s = load({**SASL, "CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CITYBRAIN_KAFKA_SASL_MECHANISM": "PLAIN"})
    opts = s.kafka_security().options()
    assert opts["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in opts
    assert faust_credentials(s.kafka_security()).protocol.value == "SASL_PLAINTEXT"  # type: ignore[union-attr]
    mtls = load({"CITYBRAIN_BROKER": "k:9093", "CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "SSL",
                 "CITYBRAIN_KAFKA_SSL_CAFILE": str(pem / "ca.pem"),
                 "CITYBRAIN_KAFKA_SSL_CERTFILE": str(pem / "client.pem"),
                 "CITYBRAIN_KAFKA_SSL_KEYFILE": str(pem / "client.key")}).kafka_security()
    assert set(mtls.options()) == {"security_protocol", "ssl_context"}
    assert isinstance(faust_credentials(mtls), faust.SSLCredentials)


def test_the_password_can_come_from_a_file_and_stays_there_for_child_processes(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {**SASL, "CITYBRAIN_KAFKA_SASL_PASSWORD": "", "CITYBRAIN_KAFKA_SASL_PASSWORD_FILE": str(secret),
           "CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    s = load(env)
    assert s.kafka_security().password == "s3cret"
    assert "CITYBRAIN_KAFKA_SASL_PASSWORD" not in s.environ() and load(s.environ()) == s


@pytest.mark.parametrize("env, says", [
    ({"CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CITYBRAIN_KAFKA_SECURITY_PROTOCOL): 'TLS' is not one of"),
    ({"CITYBRAIN_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CITYBRAIN_KAFKA_SASL_MECHANISM): 'GSSAPI' is not one of"),
    ({"CITYBRAIN_KAFKA_SASL_USERNAME": ""}, "CITYBRAIN_KAFKA_SASL_USERNAME): SASL_SSL needs a user name"),
    ({"CITYBRAIN_KAFKA_SASL_PASSWORD": ""}, "CITYBRAIN_KAFKA_SASL_PASSWORD): SASL_SSL needs a password"),
    ({"CITYBRAIN_KAFKA_SASL_PASSWORD_FILE": "/nonexistent"}, "not both"),
    ({"CITYBRAIN_KAFKA_SASL_PASSWORD": "", "CITYBRAIN_KAFKA_SASL_PASSWORD_FILE": "/nonexistent"},
     "CITYBRAIN_KAFKA_SASL_PASSWORD_FILE): cannot read /nonexistent"),
    ({"CITYBRAIN_KAFKA_SSL_CAFILE": "/nonexistent.pem"}, "CITYBRAIN_KAFKA_SSL_CAFILE): /nonexistent.pem is not a readable file"),
    ({"CITYBRAIN_KAFKA_SSL_CAFILE": "{pem}/garbage.pem"}, "CITYBRAIN_KAFKA_SSL_CAFILE): {pem}/garbage.pem holds no usable PEM"),
    ({"CITYBRAIN_KAFKA_SSL_CERTFILE": "{pem}/client.pem"}, "CITYBRAIN_KAFKA_SSL_KEYFILE): mutual TLS needs both"),
    ({"CITYBRAIN_KAFKA_SSL_CERTFILE": "{pem}/client.pem", "CITYBRAIN_KAFKA_SSL_KEYFILE": "{pem}/ca.key"},
     "CITYBRAIN_KAFKA_SSL_CERTFILE): {pem}/client.pem with {pem}/ca.key is not a usable"),
    ({"CITYBRAIN_KAFKA_SSL_CERTFILE": "{pem}/locked.pem", "CITYBRAIN_KAFKA_SSL_KEYFILE": "{pem}/locked.key"},
     "the key is encrypted"),
    ({"CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CITYBRAIN_KAFKA_SSL_CAFILE": "{pem}/ca.pem"},
     "CITYBRAIN_KAFKA_SSL_CAFILE): is set, but CITYBRAIN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT uses no TLS"),
    ({"CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "SSL"},
     "CITYBRAIN_KAFKA_SASL_USERNAME): is set, but CITYBRAIN_KAFKA_SECURITY_PROTOCOL=SSL uses no SASL"),
    ({"CITYBRAIN_BROKER": ""}, "SASL_SSL needs CITYBRAIN_BROKER"),
])
def test_settings_that_cannot_work_fail_at_start_in_one_line(pem: Path, env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({**SASL, **{k: v.format(pem=pem) for k, v in env.items()}})
    assert says.format(pem=pem) in str(err.value) and "\n" not in str(err.value)


def test_a_refused_password_and_an_untrusted_certificate_are_named_for_a_person(tmp_path: Path) -> None:
    kafka_security.use("k:9093", KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "citybrain", "pw", tmp_path / "ca.pem"))
    refused = unreachable("k:9093", ["[Error 58] SaslAuthenticationFailed: Authentication failed during "
                                     "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"])
    assert "refused the user name or password of 'citybrain' (SCRAM-SHA-256" in refused
    untrusted = unreachable("k:9093", ["[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"])
    assert f"not signed by the CAs in {tmp_path / 'ca.pem'}" in untrusted
    elsewhere = unreachable("k:9093", ["[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                                       "Hostname mismatch, certificate is not valid for 'k'. (_ssl.c:1006)"])
    assert "not for the name or address clients use" in elsewhere
    assert unreachable("k:9093", []) == "cannot reach Kafka at k:9093"


def test_a_connection_closed_on_a_client_without_certificate_hints_at_mutual_tls() -> None:
    kafka_security.use("m:9093", KafkaSecurity("SSL"))
    said = unreachable("m:9093", ["KafkaConnectionError: Connection at m:9093 closed"])
    assert "CITYBRAIN_KAFKA_SSL_CERTFILE and CITYBRAIN_KAFKA_SSL_KEYFILE" in said
