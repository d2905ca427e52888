"""Settings: one dataclass, filled from `CITYBRAIN_<NAME>` variables, then CLI flags.

Every field is a setting with an environment variable of its upper-cased name (contract
§1), so a deployment configures the service without flags and a person overrides one
thing on the command line. Bad values fail here, at start, with one line naming the
setting.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from streams.cases import CasesError, Limits
from streams.kafka_security import MECHANISMS, PROTOCOLS, KafkaSecurity
from streams.rules import RuleBook, RulesError
from streams.topics import Topics


class ConfigError(ValueError):
    """A setting that can't be used; its message is shown to a person as it is."""


@dataclass(frozen=True)
class Settings:
    broker: str | None = None  # HOST:PORT of an existing Kafka cluster; None runs the embedded one
    broker_port: int = 9092  # the local broker's port (a local Kafka's controller takes the next one)
    broker_engine: str = "embedded"  # the local broker: embedded (Tansu, memory only) or kafka (Apache Kafka)
    # TLS and SASL to the brokers (streams/kafka_security.py), for every Kafka client.
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_sasl_password_file: Path | None = None  # the password as a file's content (a mounted secret)
    kafka_ssl_cafile: Path | None = None  # PEM CAs that signed the brokers' certificates; None: the system's
    kafka_ssl_certfile: Path | None = None  # PEM certificate of this client, for mutual TLS
    kafka_ssl_keyfile: Path | None = None  # and its unencrypted PEM key
    broker_memory_warn_mb: float | None = None  # `up` warns past this; None: 2/3 of the limit
    broker_memory_limit_mb: float | None = None  # `up` stops past this; None: half the machine's memory
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    data_dir: Path = Path("var")
    topic_prefix: str = "citybrain."
    partitions: int = 8
    # Multiplies every topic's retention and segment sizes and times when provisioning
    # creates it (streams/topics.py): for tests and demos that must see retention act.
    topic_retention_scale: float = 1.0
    workers: int = 1
    simulate: float | None = None  # events per second of the city simulator
    simulate_batch: int = 1  # events per record the simulator produces
    api_tokens: str | None = None  # "token=role,token=role"
    token_file: Path | None = None
    registry_file: Path | None = None
    store: str = "memory"  # Faust table store: memory or rocksdb
    session_timeout_s: float = 6.0  # group joins wait half of this on the embedded broker
    max_batch: int = 10_000  # events in one batch record
    window_s: int = 60  # tumbling window length, event time
    lateness_s: int = 120  # how long after its end a window still accepts events
    # Events stamped further ahead of the clock are dead-lettered as future. Keep it below
    # lateness_s: a clock that is fast by more than the lateness makes every event after it late.
    clock_skew_s: float = 60.0
    rules_file: Path | None = None  # YAML or JSON overrides of the rule catalogue (streams/rules.py)
    alert_flap_s: float = 300.0  # a condition back within this long reopens its resolved alert
    alert_escalate_s: float = 900.0  # an alert firing unacknowledged this long goes one severity up
    incident_hold_s: float = 60.0  # a device's offline alert waits this long for its feeder's (streams/incidents.py)
    incident_area_min: int = 3  # offline devices of one grid cell, no feeder to blame, that make an area incident
    outlook: str = "on"  # "off": the workers forecast no device series ahead (streams/outlook.py; its cost: README)
    case_accept_s: float = 1800.0  # a case waits this long to be accepted at its level, then escalates
    case_handle_s: float = 86_400.0  # and this long to be handled
    cases_file: Path | None = None  # YAML or JSON: limits per severity and level, unit names (streams/cases.py)
    webhook_urls: str | None = None  # comma-separated; each gets Alertmanager webhook v4 notifications
    alertmanager_url: str | None = None
    webhook_group_wait_s: float = 10.0  # a new group's first notification waits this long
    webhook_group_interval_s: float = 60.0  # a group notifies at most once per this
    alertmanager_resend_s: float = 60.0  # open alerts are re-sent to Alertmanager this often
    notifier_retry_max_s: float = 60.0  # cap of the exponential backoff between attempts
    notifier_queue_max: int = 10_000  # queued notifications kept; the oldest go beyond
    notifier_metrics_port: int = 0  # the notifier's /metrics port; 0 = none
    worker_metrics_port: int = 0  # a worker's /metrics port; 0 = none (`up` gives worker i this + i)
    external_url: str | None = None  # where people reach the API; default api_url
    log_level: str = "info"
    max_body_bytes: int = 10 * 1024 * 1024  # largest ingest request the API reads
    cors_origins: str | None = None  # comma-separated origins allowed to call the API
    trusted_hosts: str | None = None  # comma-separated host names the API answers to; None: any
    api_read_timeout_s: float = 30.0  # a request's headers, and each part of its body, must arrive within this
    window_history_min: int = 75  # closed windows the API keeps (entity route, forecasts), in minutes of event time
    api_max_connections: int = 1000  # open connections of one API replica; more get a 503
    live_unauthenticated_max: int = 100  # live-feed connections waiting to authenticate; more are closed (1013)

    @property
    def bootstrap(self) -> str:
        return self.broker or f"127.0.0.1:{self.broker_port}"

    @property
    def embedded(self) -> bool:
        """True when this machine runs the broker itself (of `broker_engine`)."""
        return self.broker is None

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.partitions, self.topic_retention_scale)

    def kafka_security(self) -> KafkaSecurity:
        """How every client reaches the brokers; reads the password file."""
        password = self.kafka_sasl_password
        if self.kafka_sasl_password_file is not None:
            password = self.kafka_sasl_password_file.read_text().rstrip("\r\n")
        return KafkaSecurity(self.kafka_security_protocol, self.kafka_sasl_mechanism,
                             self.kafka_sasl_username, password, self.kafka_ssl_cafile,
                             self.kafka_ssl_certfile, self.kafka_ssl_keyfile)

    def case_limits(self) -> Limits:
        if self.cases_file is None:
            return Limits(self.case_accept_s, self.case_handle_s)
        return Limits.from_file(self.cases_file, self.case_accept_s, self.case_handle_s)

    def rule_book(self) -> RuleBook:
        return RuleBook.from_file(self.rules_file) if self.rules_file else RuleBook()

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in (self.trusted_hosts or "").split(",") if h.strip()]

    @property
    def webhooks(self) -> list[str]:
        return [u.strip() for u in (self.webhook_urls or "").split(",") if u.strip()]

    def with_overrides(self, **values: Any) -> "Settings":
        """Apply CLI flags; `None` means the flag was not given."""
        given = {k: v for k, v in values.items() if v is not None and k in _NAMES}
        return _validated(replace(self, **given))

    def environ(self) -> dict[str, str]:
        """These settings as `CITYBRAIN_*` variables, to hand to child processes."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[env_name(f.name)] = str(v)
        return out


_NAMES = {f.name for f in fields(Settings)}


def env_name(name: str) -> str:
    return f"CITYBRAIN_{name.upper()}"


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (`os.environ` by default)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(env_name(f.name))
        if raw is None or raw == "":
            continue
        values[f.name] = _convert(f.name, str(f.type), raw)
    return _validated(Settings(**values))


def _convert(name: str, type_name: str, raw: str) -> Any:
    try:
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
    except ValueError:
        kind = "an integer" if "int" in type_name else "a number"
        raise ConfigError(f"{env_name(name)}={raw!r} is not {kind}") from None
    if "Path" in type_name:
        return Path(raw)
    return raw


_HOSTPORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}(,[A-Za-z0-9._\-\[\]:]+:\d{1,5})*$")
_PREFIX = re.compile(r"^[A-Za-z0-9._\-]*$")


def _validated(s: Settings) -> Settings:
    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{name} ({env_name(name)}): {why}")

    for name in ("broker_port", "api_port"):
        if not 1 <= getattr(s, name) <= 65535:
            raise bad(name, f"{getattr(s, name)} is not a TCP port (1-65535)")
    for name in ("broker_memory_warn_mb", "broker_memory_limit_mb"):
        if getattr(s, name) is not None and not getattr(s, name) > 0:
            raise bad(name, f"{getattr(s, name):g} MB is not a positive number")
    if s.broker is not None and not _HOSTPORT.match(s.broker):
        raise bad("broker", f"{s.broker!r} is not HOST:PORT[,HOST:PORT...]")
    _check_kafka_security(s, bad)
    if not _PREFIX.match(s.topic_prefix):
        raise bad("topic_prefix", f"{s.topic_prefix!r} may only hold letters, digits, '.', '_' and '-'")
    if not 1 <= s.partitions <= 1024:
        raise bad("partitions", f"{s.partitions} is not in 1..1024")
    if not 1e-6 <= s.topic_retention_scale <= 1:
        raise bad("topic_retention_scale", f"{s.topic_retention_scale:g} is not in 0.000001..1 "
                                           "(it shrinks retention; Kafka's segments can't grow past 2 GiB)")
    if not 1 <= s.workers <= 64:
        raise bad("workers", f"{s.workers} is not in 1..64")
    if s.simulate is not None and not 0 < s.simulate <= 5_000_000:
        raise bad("simulate", f"{s.simulate:g} events/s is not in (0, 5000000]")
    if not 1 <= s.simulate_batch <= s.max_batch:
        raise bad("simulate_batch", f"{s.simulate_batch} is not in 1..{s.max_batch}")
    if s.outlook not in ("on", "off"):
        raise bad("outlook", f"{s.outlook!r} is not one of on, off")
    if s.broker_engine not in ("embedded", "kafka"):
        raise bad("broker_engine", f"{s.broker_engine!r} is not one of embedded, kafka")
    if s.store not in ("memory", "rocksdb"):
        raise bad("store", f"{s.store!r} is not one of memory, rocksdb")
    if not 0.5 <= s.session_timeout_s <= 300:
        raise bad("session_timeout_s", f"{s.session_timeout_s:g} s is not in 0.5..300")
    if not 1 <= s.window_s <= 86_400:
        raise bad("window_s", f"{s.window_s} s is not in 1..86400")
    if not 0 <= s.lateness_s <= 86_400:
        raise bad("lateness_s", f"{s.lateness_s} s is not in 0..86400")
    if not 0 <= s.clock_skew_s <= 7 * 86_400:
        raise bad("clock_skew_s", f"{s.clock_skew_s:g} s is not in 0..604800")
    if not 15 <= s.window_history_min <= 44_640:
        raise bad("window_history_min", f"{s.window_history_min} minutes is not in 15..44640 (31 days)")
    if not 0.5 <= s.api_read_timeout_s <= 3600:
        raise bad("api_read_timeout_s", f"{s.api_read_timeout_s:g} s is not in 0.5..3600")
    for name in ("api_max_connections", "live_unauthenticated_max"):
        if not 1 <= getattr(s, name) <= 1_000_000:
            raise bad(name, f"{getattr(s, name)} is not in 1..1000000")
    if not 1024 <= s.max_body_bytes <= 1 << 30:
        raise bad("max_body_bytes", f"{s.max_body_bytes} is not in 1024..{1 << 30}")
    for name in ("webhook_group_wait_s", "webhook_group_interval_s", "alertmanager_resend_s",
                 "notifier_retry_max_s"):
        lo = 0.0 if name == "webhook_group_wait_s" else 0.1
        if not lo <= getattr(s, name) <= 86_400:
            raise bad(name, f"{getattr(s, name):g} s is not in {lo:g}..86400")
    if not 1 <= s.notifier_queue_max <= 10_000_000:
        raise bad("notifier_queue_max", f"{s.notifier_queue_max} is not in 1..10000000")
    for name in ("notifier_metrics_port", "worker_metrics_port"):
        if not 0 <= getattr(s, name) <= 65535:
            raise bad(name, f"{getattr(s, name)} is not a TCP port (0 = off)")
    for name, urls in (("webhook_urls", s.webhooks), ("alertmanager_url", [s.alertmanager_url]),
                       ("external_url", [s.external_url])):
        for url in filter(None, urls):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise bad(name, f"{url!r} is not an http:// or https:// URL")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise bad("log_level", f"{s.log_level!r} is not one of debug, info, warning, error")
    for name in ("alert_flap_s", "alert_escalate_s"):
        if not 0 <= getattr(s, name) <= 7 * 86_400:
            raise bad(name, f"{getattr(s, name):g} s is not in 0..604800")
    if not 0 <= s.incident_hold_s <= 86_400:
        raise bad("incident_hold_s", f"{s.incident_hold_s:g} s is not in 0..86400")
    if not 2 <= s.incident_area_min <= 100_000:
        raise bad("incident_area_min", f"{s.incident_area_min} is not in 2..100000")
    for name in ("case_accept_s", "case_handle_s"):
        if not 1 <= getattr(s, name) <= 365 * 86_400:
            raise bad(name, f"{getattr(s, name):g} s is not in 1..31536000")
    try:
        s.case_limits()
    except CasesError as exc:
        raise bad("cases_file", str(exc)) from None
    if s.rules_file is not None:
        try:
            s.rule_book()
        except RulesError as exc:
            raise bad("rules_file", str(exc)) from None
    if s.registry_file is not None and not s.registry_file.is_file():
        raise bad("registry_file", f"{s.registry_file} is not a readable file")
    return s


def _check_kafka_security(s: Settings, bad: Callable[[str, str], ConfigError]) -> None:
    """Each Kafka security setting alone, then together: a setting that the protocol would
    ignore is an error too, since it says the operator meant another protocol."""
    protocol = s.kafka_security_protocol
    if protocol not in PROTOCOLS:
        raise bad("kafka_security_protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
    sec = KafkaSecurity(protocol)
    if protocol != "PLAINTEXT" and s.broker is None:
        raise bad("kafka_security_protocol", f"{protocol} needs {env_name('broker')}: the broker this machine "
                                             "runs itself listens in plaintext on loopback")
    sasl_given = [n for n in ("kafka_sasl_username", "kafka_sasl_password", "kafka_sasl_password_file")
                  if getattr(s, n) is not None]
    tls_given = [n for n in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
                 if getattr(s, n) is not None]
    for name, given, used in (("SASL", sasl_given, sec.sasl), ("TLS", tls_given, sec.tls)):
        if given and not used:
            raise bad(given[0], f"is set, but {env_name('kafka_security_protocol')}={protocol} uses no {name}")
    if sec.sasl:
        if s.kafka_sasl_mechanism not in MECHANISMS:
            raise bad("kafka_sasl_mechanism", f"{s.kafka_sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}")
        if not s.kafka_sasl_username:
            raise bad("kafka_sasl_username", f"{protocol} needs a user name")
        if s.kafka_sasl_password is not None and s.kafka_sasl_password_file is not None:
            raise bad("kafka_sasl_password_file", "give the password or its file, not both")
        if s.kafka_sasl_password_file is not None:
            try:
                if not s.kafka_sasl_password_file.read_text().strip():
                    raise bad("kafka_sasl_password_file", f"{s.kafka_sasl_password_file} is empty")
            except (OSError, UnicodeDecodeError) as exc:
                raise bad("kafka_sasl_password_file",
                          f"cannot read {s.kafka_sasl_password_file}: {getattr(exc, 'strerror', None) or exc}") from None
        elif not s.kafka_sasl_password:
            raise bad("kafka_sasl_password", f"{protocol} needs a password (or {env_name('kafka_sasl_password_file')})")
    if not sec.tls:
        return
    if (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None):
        missing = "kafka_ssl_keyfile" if s.kafka_ssl_keyfile is None else "kafka_ssl_certfile"
        raise bad(missing, "mutual TLS needs both the certificate and its key")
    for name in tls_given:
        path = getattr(s, name)
        if not path.is_file():
            raise bad(name, f"{path} is not a readable file")
    try:  # a file that is there but holds no certificate, or the wrong key, fails now, not at connect
        ssl.create_default_context(cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise bad("kafka_ssl_cafile", f"{s.kafka_ssl_cafile} holds no usable PEM certificate: {exc}") from None
    if s.kafka_ssl_certfile is not None:
        try:
            s.kafka_security().ssl_context()
        except (ssl.SSLError, OSError) as exc:
            raise bad("kafka_ssl_certfile", f"{s.kafka_ssl_certfile} with {s.kafka_ssl_keyfile} is not a usable "
                                            f"PEM certificate and key: {exc}") from None
