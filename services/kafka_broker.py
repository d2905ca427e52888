"""Apache Kafka on this machine: one KRaft node, or a cluster of them, no ZooKeeper.

The jars come from Maven Central through `deploy/kafka/fetch.sh` (version pinned in
`deploy/kafka/pom.xml`, cached under ~/.cache/citybrain) and run as `java -cp ...
kafka.Kafka server.properties`. Each node is broker and controller at once; its storage
is formatted on first start and kept under its work directory, so a restart carries on
from what the node had. Same interface as `services.broker.EmbeddedBroker`: `address`,
`log_path`, `proc`, `start()`, `stop()`.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from services.broker import BrokerError, LocalBroker
from services.processes import port_in_use, spawn

FETCH_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "fetch.sh"
JAVA_HINT = "Apache Kafka needs Java 17 or newer: install a JRE (Debian: apt-get install openjdk-17-jre-headless)"
HEAP = "-Xmx512m"

# What every node sets. The group settings let consumer groups join at once and with the
# short session timeouts the tests use (Kafka's own minimum is 6 s, its first join waits 3 s).
BASE_CONFIG = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    # Provisioning creates every topic with its partitions and configs (services.provision);
    # a topic made up by a typo should fail, not appear with defaults.
    "auto.create.topics.enable": "false",
    "log.retention.check.interval.ms": "30000",
}

LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


def kafka_classpath() -> str:
    """The cached jars, fetched on first use; a missing Java or Maven is one line."""
    if shutil.which("java") is None:
        raise BrokerError(JAVA_HINT)
    try:
        out = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BrokerError(f"cannot fetch Apache Kafka: {last}") from None
    return str(Path(out.stdout.strip()) / "*")


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64. One starting with '-' would
    read as an option to the storage tool (Kafka's own generator skips those too)."""
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return cid


class KafkaNode(LocalBroker):
    """One KRaft node (broker and controller) on loopback, durable under `workdir`."""

    name = "Kafka"
    stop_grace_s = 30.0  # a controlled shutdown moves leadership away first: a few seconds

    def __init__(self, port: int, workdir: Path, *, node_id: int = 1, controller_port: int,
                 voters: str | None = None, cluster_id: str | None = None,
                 config: dict[str, str] | None = None, host: str = "127.0.0.1",
                 format_args: tuple[str, ...] = ()) -> None:
        super().__init__(port, workdir, host)
        self.node_id, self.controller_port = node_id, controller_port
        self.voters = voters or f"{node_id}@{host}:{controller_port}"
        self.cluster_id = cluster_id or new_cluster_id()
        self.config = config or {}
        self.format_args = format_args  # e.g. --add-scram: users a new cluster starts with

    def _properties(self) -> Path:
        props = {
            **BASE_CONFIG,
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://{self.address},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.address}",
            "log.dirs": str((self.workdir / "data").resolve()),
            **self.config,
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j.properties").write_text(LOG4J)
        return path

    def _java(self, classpath: str, main: str, *args: str) -> list[str]:
        return ["java", HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{(self.workdir / 'log4j.properties').resolve()}",
                "-cp", classpath, main, *args]

    def start(self, timeout_s: float = 90.0) -> "KafkaNode":
        self.launch()
        self.wait_listening(timeout_s)
        return self

    def launch(self) -> None:
        """Format storage if new, then start the JVM; it listens once it has a quorum."""
        classpath = kafka_classpath()  # first: without Java, nothing else matters
        for port in (self.port, self.controller_port):
            if port_in_use(self.host, port):
                raise BrokerError(f"port {port} on {self.host} is already in use "
                                  "(another broker? pass --broker-port or --broker HOST:PORT)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        if not (self.workdir / "data" / "meta.properties").exists():  # else: keep its data and id
            fmt = subprocess.run(self._java(classpath, "kafka.tools.StorageTool", "format",
                                            "-t", self.cluster_id, "-c", str(props), *self.format_args),
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                said = [line for line in (fmt.stdout + fmt.stderr).splitlines() if line.strip()]
                raise BrokerError(f"cannot format Kafka storage in {self.workdir}: {said[0] if said else '?'}")
        with open(self.log_path, "ab") as log:
            self.proc = spawn(self._java(classpath, "kafka.Kafka", str(props)),
                              env={"PATH": "/usr/bin:/bin", "HOME": str(self.workdir)},
                              cwd=self.workdir, output=log)

    def kill(self) -> None:
        """SIGKILL: a crash, no controlled shutdown."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# Internal topics that fit one broker.
ONE_NODE = {"offsets.topic.replication.factor": "1", "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1"}


def single_node(port: int, workdir: Path) -> KafkaNode:
    """`citybrain broker --engine kafka`: one node whose internal topics fit one broker."""
    return KafkaNode(port, workdir, controller_port=port + 1, config=ONE_NODE)


class KafkaCluster:
    """`size` KRaft nodes on loopback forming one cluster, each broker and controller;
    internal topics replicated to all (at most 3), two in sync for a write to count."""

    def __init__(self, ports: list[tuple[int, int]], workdir: Path) -> None:
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports, 1))
        rf = str(min(3, len(ports)))
        config = {"offsets.topic.replication.factor": rf, "transaction.state.log.replication.factor": rf,
                  "default.replication.factor": rf,
                  "min.insync.replicas": str(min(2, len(ports))),
                  "transaction.state.log.min.isr": str(min(2, len(ports)))}
        cluster_id = new_cluster_id()
        self.nodes = [KafkaNode(p, workdir / f"node-{i}", node_id=i, controller_port=c, voters=voters,
                                cluster_id=cluster_id, config=config)
                      for i, (p, c) in enumerate(ports, 1)]

    @property
    def address(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def start(self, timeout_s: float = 120.0) -> "KafkaCluster":
        try:
            self.heal(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def heal(self, timeout_s: float = 120.0) -> None:
        """Start the nodes that are down (not started, killed or stopped) and wait until
        every broker is registered; a running cluster is left as it is. A node listens only
        once a quorum of controllers is up: launch all, then wait."""
        down = [n for n in self.nodes if n.proc is None or n.proc.poll() is not None]
        if not down:
            return
        for n in down:
            n.proc = None
            n.launch()
        for n in down:
            n.wait_listening(timeout_s)
        wait_brokers(self.address, len(self.nodes), timeout_s)

    def stop(self) -> None:
        # All at once: stopped one by one, the last nodes lose their quorum and each
        # waits out its controlled shutdown (measured on 2026-11-30, Kafka 3.9.1: 38 s for
        # three nodes, 5 s at once).
        for n in self.nodes:
            if n.proc is not None:
                n.proc.terminate()
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _registered(bootstrap: str) -> int:
    from services.provision import broker_count, connect_admin

    admin = await connect_admin(bootstrap)
    try:
        return await broker_count(admin)
    finally:
        await admin.close()


def wait_brokers(bootstrap: str, n: int, timeout_s: float = 60.0) -> None:
    """Until `n` brokers are registered: provisioning sizes replication by what it sees."""
    deadline = time.monotonic() + timeout_s
    while asyncio.run(_registered(bootstrap)) < n:
        if time.monotonic() > deadline:
            raise BrokerError(f"fewer than {n} Kafka brokers registered at {bootstrap} after {timeout_s:g}s")
        time.sleep(0.5)
