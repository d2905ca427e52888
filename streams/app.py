"""The Faust application: one consumer group of stream workers over the city's topics."""

from __future__ import annotations

from pathlib import Path

import faust
from faust.types.auth import CredentialsT

from streams import forecast_agent
from streams.kafka_security import KafkaSecurity
from streams.settings import StreamSettings


def create_app(settings: StreamSettings, datadir: Path | None = None) -> faust.App:
    session = settings.session_timeout_s
    app = faust.App(
        settings.topics.app_id,
        # aiokafka with end offsets that are right on the embedded broker (streams/transport.py)
        broker=[f"citybrain://{hp}" for hp in settings.bootstrap.split(",")],
        # TLS and SASL for Faust's own clients; the probes in streams/transport.py find the
        # same through streams.kafka_security by these addresses.
        broker_credentials=faust_credentials(settings.kafka_security()),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(datadir or settings.data_dir / "worker"),
        topic_partitions=settings.partitions,
        # Every topic is provisioned before workers start (services.provision); a worker
        # that created topics itself would get the embedded broker's 4-partition default.
        topic_allow_declare=False,
        topic_disable_leader=True,
        # The embedded broker makes a joining member wait half the session timeout.
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.2, session / 6),
        broker_request_timeout=max(30.0, session * 2),
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
        # Every in-sync replica has a record before it counts (with min.insync.replicas 2 of
        # 3, services.provision): with acks=1 a leader that dies before its followers copied
        # a changelog or output record takes the record with it. One broker: the same as 1.
        producer_acks=-1,
        # How long a consumer trusts its view of the partitions' leaders (aiokafka's default
        # is 5 minutes): a stale view can point at a follower that lags, which Kafka lets
        # answer, with no error to correct it (streams/transport.py, `_refresh_leaders`).
        consumer_metadata_max_age_ms=30_000,
        # Workers produce their outputs as whole record batches (streams/produce.py);
        # below the 1 MiB that Kafka brokers accept by default.
        producer_max_batch_size=512 * 1024,
    )
    forecast_agent.register(app, settings)  # early warning, beside the agents services.worker adds
    return app


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """The cluster's security as a Faust app's `broker_credentials` (Faust turns them back
    into aiokafka's options for its own consumer and producer). Here, not beside the
    options, so that the API and provisioning, which use those, do not load Faust."""
    if security.sasl:
        # SASL_SSL when given a TLS context, SASL_PLAINTEXT without
        return faust.SASLCredentials(username=security.username, password=security.password,
                                     ssl_context=security.ssl_context(), mechanism=security.sasl_mechanism)
    if security.tls:
        return faust.SSLCredentials(security.ssl_context())
    return None
