"""TLS and SASL to Kafka: what every client of a cluster needs besides its addresses.

A cluster's security belongs to its addresses: every client that connects to them needs
it, including those made deep inside code that is handed only an address (the read
models' topic views, Faust's transport and its end-offset probes, the partition
watchdog). So a process registers its cluster's security once, at start, from its
settings (`use`), and every Kafka client is made with `client_options(bootstrap)`: the
one place that turns settings into aiokafka options. An address nobody registered is
plaintext, exactly as before TLS existed here.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How to reach one cluster; valid by construction only through `services.config`,
    which names the setting at fault."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None
    cafile: Path | None = None  # None: the system's trusted CAs
    certfile: Path | None = None  # with keyfile: this client's certificate (mutual TLS)
    keyfile: Path | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context: broker certificates and host names checked. Raises
        ssl.SSLError or OSError for a file that is missing or holds no usable PEM."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        if self.certfile is not None:
            ctx.load_cert_chain(self.certfile, self.keyfile, password=_no_passphrase)
        return ctx

    def options(self) -> dict[str, Any]:
        """aiokafka client keyword arguments; none at all for plaintext."""
        if self.protocol == "PLAINTEXT":
            return {}
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            out["ssl_context"] = self.ssl_context()
        if self.sasl:
            out.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password)
        return out


def _no_passphrase() -> str:
    # Without this, OpenSSL would ask for an encrypted key's passphrase on the terminal.
    raise ssl.SSLError("the key is encrypted; give an unencrypted PEM key (kept readable by this service only)")


PLAINTEXT = KafkaSecurity()
_registered: dict[str, KafkaSecurity] = {}


def _servers(bootstrap: str) -> list[str]:
    return [hp.strip().lower() for hp in bootstrap.split(",") if hp.strip()]


def use(bootstrap: str, security: KafkaSecurity) -> None:
    """Every client of the cluster at `bootstrap` (any of its addresses) uses `security`."""
    for server in _servers(bootstrap):
        _registered[server] = security


def security_for(bootstrap: str) -> KafkaSecurity:
    return next((_registered[s] for s in _servers(bootstrap) if s in _registered), PLAINTEXT)


def client_options(bootstrap: str) -> dict[str, Any]:
    """`bootstrap_servers` and the security options for an aiokafka client of `bootstrap`."""
    return {"bootstrap_servers": bootstrap, **security_for(bootstrap).options()}


class FailedConnections(logging.Handler):
    """While active, keeps why each connection to a broker failed, instead of logging it:
    aiokafka logs the reason (a refused password, an untrusted certificate) and then
    raises only "Unable to bootstrap", so a person would get the one without the other."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []
        self._logger = logging.getLogger("aiokafka")

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and str(record.msg).startswith("Unable connect to"):
            self.reasons.append(str(record.args[-1]) if isinstance(record.args, tuple) else record.getMessage())

    def __enter__(self) -> "FailedConnections":
        self._level, self._propagate = self._logger.level, self._logger.propagate
        self._logger.addHandler(self)
        self._logger.setLevel(logging.ERROR)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
        self._logger.propagate = self._propagate


def unreachable(bootstrap: str, reasons: list[str]) -> str:
    """One line for a person: which cluster, and why, in the words of its settings."""
    reason = reasons[-1] if reasons else ""
    sec = security_for(bootstrap)
    if "CERTIFICATE_VERIFY_FAILED" in reason and "mismatch" in reason:
        return (f"cannot reach Kafka at {bootstrap}: its TLS certificate is not for the name or address "
                f"clients use (CITYBRAIN_BROKER must be one its certificate lists): {reason}")
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        trusted = f"the CAs in {sec.cafile}" if sec.cafile else "this system's CAs"
        return (f"cannot reach Kafka at {bootstrap}: its TLS certificate is not signed by {trusted} "
                f"(CITYBRAIN_KAFKA_SSL_CAFILE): {reason}")
    if "Authentication failed" in reason or "SaslAuthenticationFailed" in reason:
        return (f"cannot reach Kafka at {bootstrap}: it refused the user name or password of "
                f"{sec.username!r} ({sec.sasl_mechanism}; CITYBRAIN_KAFKA_SASL_*): {reason}")
    if sec.tls and sec.certfile is None and reason.endswith("closed"):
        # TLS 1.3: a broker that requires client certificates closes after the handshake
        return (f"cannot reach Kafka at {bootstrap}: {reason}; if it requires client certificates "
                "(mutual TLS), set CITYBRAIN_KAFKA_SSL_CERTFILE and CITYBRAIN_KAFKA_SSL_KEYFILE")
    return f"cannot reach Kafka at {bootstrap}" + (f": {reason}" if reason else "")
