"""The topics of the city brain: names, keys and how each is provisioned.

Every topic is created explicitly before any client touches it (see
`services.provision`): the embedded broker auto-creates unknown topics with
4 partitions and no compaction, which would silently break co-partitioning
and the compacted state topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DOMAINS: tuple[str, ...] = ("gate", "traffic", "grid")


def domain_table(domain: str) -> str:
    """The Faust table of a domain's partition snapshots (streams.agents.DomainAgent)."""
    return f"{domain}-state"


# The other tables of the workers: alert states (streams.agents.AlertAgent), incidents
# (streams.incident_agents), cases (streams.case_agent) and early warning's models
# (streams.forecast_agent). Named here, with the topics, because their changelogs are
# provisioned with them (`Topics.specs`) by processes that do not load Faust.
ALERTS_TABLE, INCIDENTS_TABLE, CASES_TABLE = "alerts-state", "incidents-state", "cases-state"
FORECAST_TABLE = "forecast-state"
TABLES: tuple[str, ...] = (*map(domain_table, DOMAINS), ALERTS_TABLE, INCIDENTS_TABLE, CASES_TABLE, FORECAST_TABLE)

DAY_MS = 86_400_000
GIB = 1 << 30
# What Apache Kafka does with each topic over months and years (the embedded broker keeps
# everything in memory and applies none of it). Sizes are per partition and replica.
# Latest value per key (state, registry, alerts, live figures). Kafka compacts only closed
# segments: 64 MiB segments rolled at least daily keep what a restarting worker or API
# reads back close to one record per key, not up to a 1 GiB segment of history.
COMPACTED = {"cleanup.policy": "compact", "segment.bytes": str(64 << 20), "segment.ms": str(DAY_MS)}
# A table's changelog holds whole state values, and an incident state holds every open
# alert of its district (streams/incidents.py): about 350 bytes each, so ~3,000 devices
# silent in one district passed Kafka's default 1 MiB record limit, and the worker
# stopped on MessageSizeTooLarge (the Kafka soak, 2026-11-30, after 24 minutes). 16 MiB
# holds some 35,000 (450 bytes each with the state's indexes); a value past that still
# stops the worker (README, Incidents).
STATE = COMPACTED | {"max.message.bytes": str(16 << 20)}
# Raw events are kept a week, for replays after an incident, and at most 8 GiB a
# partition (at `make run`'s 1,000 events/s about a week and a half on 8 partitions), so
# a burst can't fill the disk. Stating retention also answers the DescribeConfigs of
# tools that read it (Quix Streams does; the embedded broker reports only what a topic
# was created with).
# Their 1 GiB segments are Kafka's default, stated so that a retention scale shrinks them too.
EVENTS = {"retention.ms": str(7 * DAY_MS), "retention.bytes": str(8 * GIB), "segment.bytes": str(GIB)}
# Rejected records: a month to look into them, 1 GiB at most.
DEADLETTERS = {"retention.ms": str(30 * DAY_MS), "retention.bytes": str(GIB), "segment.bytes": str(GIB)}
# The outlook's newest forecasts (streams/outlook.py), about 4 MB for a 1,000 events/s
# city but rewritten every 5 minutes: hour-long segments, so that what an API reads back
# at its start is compacted within the hour, not a day of rewrites.
FORECASTS = COMPACTED | {"segment.bytes": str(16 << 20), "segment.ms": str(3_600_000)}
# Window figures are keyed per window, so compaction alone would keep every window
# forever; time retention drops them after two days (the API's window history keeps
# what it serves on its own disk), size retention caps them.
WINDOWED = {"cleanup.policy": "compact,delete", "retention.ms": str(2 * DAY_MS),
            "retention.bytes": str(2 * GIB), "segment.bytes": str(64 << 20)}

# The sizes and durations above, which a retention scale multiplies: a test or a demo
# sees weeks of retention act in minutes (Kafka deletes and compacts closed segments only,
# so segments shrink with it). A segment never shrinks below 1 MiB: it must hold the
# largest batch the broker accepts (`max.message.bytes`, 1 MiB), or Kafka refuses the
# batch (RecordListTooLarge: a worker's changelog flush was, at 8 KiB segments), and
# Kafka 4 refuses smaller segments itself.
SCALED = ("retention.ms", "retention.bytes", "segment.bytes", "segment.ms")
MIN_SEGMENT_BYTES = 1 << 20


def scaled(config: dict[str, str], scale: float) -> dict[str, str]:
    """A topic's config with its sizes and durations multiplied by `scale`."""
    out = {k: str(max(1, round(int(v) * scale))) if k in SCALED else v for k, v in config.items()}
    if "segment.bytes" in out:
        out["segment.bytes"] = str(max(MIN_SEGMENT_BYTES, int(out["segment.bytes"])))
    return out


# Bounds (seconds) of the processing-latency histogram each vitals record carries:
# record timestamp → its batch processed.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# How long a fetch may wait for records, for every consumer on the alert path (workers,
# read models, notifier). Apache Kafka answers a waiting fetch as soon as records arrive,
# so this only sets how often an idle consumer asks; the embedded broker answers later
# the longer the allowed wait (measured: a record seen after up to 435 ms at Faust's
# fixed 1,500 ms, 212 ms at aiokafka's default 500 ms, 52 ms at 100 ms), and an alert
# crosses three consumers on its way to a screen.
FETCH_MAX_WAIT_MS = 100
# Views off that path (window figures, vitals, the registry) wait longer: the embedded
# broker's cost of answering a fetch grows with the batches stored in the partition
# (measured: tailing 80 batches/s took 6 % of a core with 2,000 batches stored, 72 %
# with 160,000), so read models of the busiest topics asking ten times a second slowed
# it down more every minute of a soak. Window figures are published once a second.
VIEW_FETCH_MAX_WAIT_MS = 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (contract §2), plus the project's own additions."""

    prefix: str = "citybrain."
    partitions: int = 8
    retention_scale: float = 1.0  # CITYBRAIN_TOPIC_RETENTION_SCALE: see `scaled`

    def events(self, domain: str) -> str:
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
        return f"{self.prefix}{domain}.events"

    @property
    def registry(self) -> str:
        return f"{self.prefix}registry"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def alert_inputs(self) -> str:
        """What changes an alert: detections and ack/resolve commands, keyed `<rule>|<entity>`
        so that one partition orders everything about one alert (streams/alerting.py)."""
        return f"{self.prefix}alert-inputs"

    @property
    def incident_inputs(self) -> str:
        """Alert states that may share a cause, keyed by the district of that cause, so
        a feeder's alerts and its devices' meet on one partition (streams/incidents.py)."""
        return f"{self.prefix}incident-inputs"

    @property
    def incidents(self) -> str:
        """The latest state of every incident, keyed by its id (compacted, contract §8)."""
        return f"{self.prefix}incidents"

    @property
    def case_inputs(self) -> str:
        """What changes a case, keyed by case id: its opening, people's commands and the
        clock's ticks, in order on the case's partition (streams/cases.py)."""
        return f"{self.prefix}case-inputs"

    @property
    def cases(self) -> str:
        """The latest state of every case, keyed by its id (compacted, contract §8)."""
        return f"{self.prefix}cases"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def vitals(self) -> str:
        """Live per-partition progress and figures, keyed `<domain>/<partition>` (compacted)."""
        return f"{self.prefix}vitals"

    @property
    def aggregates(self) -> str:
        """Window figures of a partition's entities as columns, one record per partition and
        window (a few for a large one), on the same-numbered partition: the changed rows
        once a second while the window is open (`<domain>/<p>|<start>|live/<offset>/<chunk>`),
        then all of them when it closes (`<domain>/<p>|<start>|closed/<chunk>`)."""
        return f"{self.prefix}aggregates"

    @property
    def rollups(self) -> str:
        """Each partition's shares of the areas of every level, keyed and placed like the
        aggregates; readers add the partitions' shares of an area."""
        return f"{self.prefix}rollups"

    @property
    def forecasts(self) -> str:
        """Every device series' forecast 15, 30 and 60 minutes ahead, as columns: per
        partition of the aggregates and chunk of its series the newest, keyed
        `<domain>/<p>/<chunk>` (compacted; streams/outlook.py)."""
        return f"{self.prefix}forecasts"

    @property
    def app_id(self) -> str:
        """The Faust application id: consumer group and prefix of its internal topics."""
        return f"{self.prefix}worker"

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    def specs(self, tables: tuple[str, ...] = TABLES) -> list[TopicSpec]:
        """Everything the service reads or writes, including Faust's own topics.

        Event topics and table changelogs share one partition count: Faust assigns
        partition p of a source topic and of its tables' changelogs to the same
        worker, which is what keeps a key's state with its partition.
        """
        n = self.partitions
        specs = [TopicSpec(self.events(d), n, EVENTS) for d in DOMAINS]
        specs += [
            TopicSpec(self.registry, 1, COMPACTED),
            TopicSpec(self.alerts, n, COMPACTED),
            TopicSpec(self.alert_inputs, n, EVENTS),
            TopicSpec(self.incident_inputs, n, EVENTS),
            TopicSpec(self.incidents, n, COMPACTED),
            TopicSpec(self.case_inputs, n, EVENTS),
            TopicSpec(self.cases, n, COMPACTED),
            TopicSpec(self.deadletter, 1, DEADLETTERS),
            TopicSpec(self.vitals, 1, COMPACTED),
            TopicSpec(self.aggregates, n, WINDOWED),
            TopicSpec(self.rollups, n, WINDOWED),
            TopicSpec(self.forecasts, n, FORECASTS),
            TopicSpec(f"{self.app_id}-__assignor-__leader", 1),
        ]
        specs += [TopicSpec(self.changelog(t), n, STATE) for t in tables]
        if self.retention_scale == 1.0:
            return specs
        return [TopicSpec(s.name, s.partitions, scaled(s.config, self.retention_scale)) for s in specs]
