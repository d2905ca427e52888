"""Faust's and aiokafka's private parts: used in the adapters only, and still there.

The workers override and call private names of Faust and aiokafka (streams/transport.py
says why, one by one). An upgrade that renames one, or changes its arguments, would not
fail loudly: an override nobody calls any more just stops fixing what it fixed (records
skipped, commits behind). So the adapters are the only modules that may use such names
(read from the source), and each name they use is checked against the installed versions
here.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import faust
import faust.streams
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher
from faust.transport.drivers import aiokafka as driver

from streams import codecs, transport
from streams.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("faust", "aiokafka", "mode")
ADAPTERS = {"streams/transport.py", "streams/aiokafka_private.py"}
# Private by name, public by documentation: Faust's guide to custom codecs says to
# subclass `Codec` and define `_dumps` and `_loads` (streams/codecs.py does).
DOCUMENTED = {"def _dumps", "def _loads"}


def private_uses(path: Path) -> list[str]:
    """Private names of the libraries that `path` uses: imported, read off an object
    other than self, or reached through `super()` or `self` in a subclass of theirs."""
    tree = ast.parse(path.read_text(), str(path))
    library_names = {alias.asname or alias.name.split(".")[0]
                     for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                     and (getattr(node, "module", None) or node.names[0].name).split(".")[0] in LIBRARIES
                     for alias in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b).split(".")[0] in library_names for b in node.bases):
            found += [f"{node.name}.{use}" for use in _inherited_private(node)]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = ast.unparse(node.value)
            if owner not in ("self", "cls", "os"):  # os._exit is the standard library's
                found.append(f"{owner}.{node.attr}")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _inherited_private(cls: ast.ClassDef) -> list[str]:
    """`super()._x`, and `self._x` that the class itself neither assigns nor defines."""
    own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    own |= {t.attr for n in ast.walk(cls) if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self"}
    uses = []
    for n in ast.walk(cls):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(n.name) \
                and f"def {n.name}" not in DOCUMENTED:
            uses.append(f"def {n.name}")  # an override of theirs, or a helper that belongs elsewhere
        if isinstance(n, ast.Attribute) and _private(n.attr):
            owner = ast.unparse(n.value)
            if owner == "super()" or (owner == "self" and n.attr not in own):
                uses.append(f"{owner}.{n.attr}")
    return uses


def test_private_names_are_used_in_the_adapters_only() -> None:
    found = []
    for layer in ("streams", "api", "services", "benchmarks"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel not in ADAPTERS:
                found += [f"{rel}: {use}" for use in private_uses(path)]
    assert not found, (f"private Faust/aiokafka names outside the adapters ({', '.join(sorted(ADAPTERS))}):\n"
                       + "\n".join(found))


# What the adapters override: each must still override something of the same arguments.
OVERRIDES = [
    (transport.ConsumerThread, "_create_worker_consumer"),
    (transport.ConsumerThread, "_highwaters"),
    (transport.ConsumerThread, "seek_to_committed"),
    (transport.Consumer, "_new_consumer_thread"),
    (transport.Consumer, "_commit_tps"),
    (transport.Consumer, "_filter_committable_offsets"),
    (transport.Consumer, "_add_gap"),
    (transport.Consumer, "_wait_next_records"),
    (transport.Worker, "_schedule_shutdown"),
    (codecs._OrJson, "_dumps"),
    (codecs._OrJson, "_loads"),
]
# What the adapters call, with the arguments they pass.
CALLED = [
    (driver.Consumer, "_handle_attached", ["self", "commit_offsets"]),
    (driver.Consumer, "_commit_offsets", ["self", "offsets", "start_new_transaction"]),
    (driver.Consumer, "_should_commit", ["self", "tp", "offset"]),
    (driver.Consumer, "_get_active_partitions", ["self"]),
    (driver.AIOKafkaConsumerThread, "_ensure_consumer", ["self"]),
    (driver.AIOKafkaConsumerThread, "call_thread", ["self", "fun", "args", "kwargs"]),
    (driver.Producer, "_ensure_producer", ["self"]),
    (AIOKafkaClient, "_wait_on_metadata", ["self", "topic"]),
    (AIOKafkaClient, "force_metadata_update", ["self"]),  # public, but reached through `_client`
    (AIOKafkaProducer, "_partition", ["self", "topic", "partition", "key", "value",
                                      "serialized_key", "serialized_value"]),
]
# Attributes the adapters read or set, each assigned by its class (or a base of it).
ATTRIBUTES = [
    (driver.Consumer, ["_paused_partitions", "_buffered_partitions", "_read_offset", "_committed_offset",
                       "_acked", "_acked_index", "_gap", "_thread"]),
    (driver.AIOKafkaConsumerThread, ["_consumer"]),
    (AIOKafkaConsumer, ["_fetch_max_wait_ms", "_fetcher", "_subscription", "_client"]),
    (Fetcher, ["_records", "_in_flight"]),
]


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("cls, name", OVERRIDES, ids=[f"{c.__name__}.{n}" for c, n in OVERRIDES])
def test_each_override_still_overrides_a_method_of_the_same_arguments(cls: type, name: str) -> None:
    base = next((b for b in cls.__mro__[1:] if name in vars(b)), None)
    assert base is not None, f"{cls.__name__}.{name} overrides nothing in the installed Faust"
    assert parameters(vars(base)[name]) == parameters(vars(cls)[name]), f"{base.__module__}.{base.__name__}.{name}"


@pytest.mark.parametrize("owner, name, expected", CALLED, ids=[f"{o.__name__}.{n}" for o, n, _ in CALLED])
def test_each_called_name_still_takes_the_arguments_passed(owner: type, name: str, expected: list[str]) -> None:
    assert callable(getattr(owner, name, None)), f"{owner.__module__}.{owner.__name__}.{name} is gone"
    assert parameters(getattr(owner, name)) == expected


@pytest.mark.parametrize("owner, names", ATTRIBUTES, ids=[o.__name__ for o, _ in ATTRIBUTES])
def test_each_attribute_read_is_still_assigned(owner: type, names: list[str]) -> None:
    source = "".join(inspect.getsource(c) for c in owner.__mro__ if c.__module__.split(".")[0] in LIBRARIES)
    missing = [n for n in names if not re.search(rf"self\.{n}\b\s*(:[^=\n]*)?=", source)]
    assert not missing, f"{owner.__name__} no longer assigns {missing}"


def test_faust_reads_the_partition_a_write_acts_for() -> None:
    with transport.acting_for_partition(5):
        assert faust.streams.current_event().message.partition == 5  # where the stores put a write
    assert faust.streams.current_event() is None


class Recorder(faust.Sensor):
    def __init__(self) -> None:
        super().__init__()
        self.sets: list[tuple[str, Any]] = []

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        self.sets.append((key, value))


def test_a_state_table_write_reaches_fausts_monitoring_sensors(tmp_path: Path) -> None:
    from streams.agents import state_table
    from streams.topics import Topics

    class Members:  # of StreamSettings, those state_table reads
        partitions = 4
        topics = Topics("t.", 4)

    app = faust.App("t", broker="citybrain://127.0.0.1:1", datadir=str(tmp_path), store="memory://")
    sensor = Recorder()
    app.sensors.add(sensor)
    settings: StreamSettings = Members()  # type: ignore[assignment]
    table = state_table(app, settings, "x-state")
    table.use_partitioner = True  # no source event to place the write: the producer would
    table["k"] = {"v": 1}
    assert sensor.sets == [("k", {"v": 1})]
    assert table.pending == {"k": (None, {"v": 1})}
