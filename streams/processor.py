"""One step of one partition: a batch of raw records → the partition's state advanced,
and the step's outputs.

This is the whole processing logic of a worker, free of Faust so it tests without a
broker. The agent (streams/agents.py) feeds it records, keeps the `PartitionState`
(streams/state.py) and sends what comes back. A step reads like the data flows:

    records → validated columns (dead letters out)
            → late events dead-lettered against the partition's stream time
            → folded into the entity windows and every level's area shares (numpy blocks)
            → judged by the domain's rules (detections out)
            → windows due closed (their final figures out)

Every decision depends only on the order of records, so a replay from a snapshot decides
exactly as the first run did (streams/state.py says why that makes crashes safe).

An entity's state lives with the partition its events arrive on, whatever partitioner
put them there: murmur2 over the entity id (the Java client's and aiokafka's), crc32
(librdkafka's default), or a gateway's id for its batches. Every one of those keeps an
entity on one partition, so its windows, lateness and rules see its events in the order
they were produced, and a backlog replayed at full speed is judged as it was live. An
earlier design forwarded events to the murmur2 partition of their entity; a forwarded
event then queued behind that partition's whole backlog, where stream time had run
minutes ahead of it, and was judged late. An entity whose events arrive on several
partitions (devices behind two gateways) gets a state in each: readers add its windows'
shares like an area's, and each share's rules see their part of its events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence

import numpy as np
import orjson

from streams import events as contract
from streams.columns import EventColumns, decode
from streams.detectors import Batch, Detector
from streams.registry import UNASSIGNED, Registry
from streams.state import ROLLUP_LEVELS, PartitionState
from streams.windows import SHAPES, Block, Columns, late_mask, stream_times, window_start

ROWS_PER_RECORD = 2000  # window records stay far below Kafka's 1 MB message limit
AHEAD_NOTED_MS = 10_000  # an event this far ahead of the worker's clock names its entity in the vitals
Output = tuple[str, bytes, bytes]  # window topic kind ("aggregates" or "rollups"), key, value
DUMPS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Touched:
    """Slots whose figures a step changed in one window: entity slots, and area slots per level."""

    entities: list[np.ndarray] = field(default_factory=list)
    areas: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, other: "Touched") -> None:
        self.entities += other.entities
        for level, slots in other.areas.items():
            self.areas.setdefault(level, []).extend(slots)


@dataclass
class Step:
    deadletters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    detections: list[tuple[bytes, bytes]] = field(default_factory=list)  # alert-inputs key, doc
    closed: list[Output] = field(default_factory=list)  # final figures of the windows that closed
    closed_starts: list[int] = field(default_factory=list)
    touched: dict[int, Touched] = field(default_factory=dict)  # window start → changed slots
    ahead: dict[str, float] = field(default_factory=dict)  # entity → seconds its newest event was ahead of the clock


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


class AreaMap:
    """A partition's entity slot → area slot, per level, rebuilt when the registry changes."""

    def __init__(self) -> None:
        self.version = -1
        self.slots: dict[str, np.ndarray] = {level: np.empty(0, np.int64) for level in ROLLUP_LEVELS}

    def of(self, registry: Registry, state: PartitionState) -> dict[str, np.ndarray]:
        known = len(self.slots["city"])
        if self.version != registry.version:
            known, self.version = 0, registry.version
        if known < len(state.entities):
            areas = [registry.area(e) for e in state.entities.ids[known:]]
            for level in ROLLUP_LEVELS:
                names = ["city" if level == "city" else a.get(level, UNASSIGNED) for a in areas]
                self.slots[level] = np.concatenate([self.slots[level][:known], state.areas[level].of(names)])
        return self.slots


class PartitionProcessor:
    def __init__(self, domain: str, topic: str, partitions: int, window_ms: int, lateness_ms: int,
                 registry: Registry, max_batch: int = contract.DEFAULT_MAX_BATCH,
                 clock: Callable[[], float] = time.time, detector: Detector | None = None,
                 max_ahead_ms: int = contract.DEFAULT_MAX_AHEAD_MS) -> None:
        self.domain, self.topic, self.partitions = domain, topic, partitions
        self.window_ms, self.lateness_ms = window_ms, lateness_ms
        self.shape = SHAPES[domain]
        self.registry, self.max_batch, self.clock = registry, max_batch, clock
        self.detector, self.max_ahead_ms = detector, max_ahead_ms
        self._areas: dict[int, AreaMap] = {}

    def forget(self, partition: int) -> None:
        """The partition's state is gone (a rebalance): drop what was derived from it."""
        self._areas.pop(partition, None)

    def step(self, partition: int, records: Sequence[Record], state: PartitionState) -> Step:
        out = Step()
        events = self._accept(partition, records, state, out)
        events, before = self._drop_late(partition, events, state, out)
        slots = state.entities.of(events.entity)
        if len(events):
            self._fold(partition, events, slots, state, out)
        if self.detector is not None:
            self._detect(events, slots, before, state, out)
        self._close_due(partition, state, out)
        return out

    # ------------------------------------------------------------ stages

    def _accept(self, partition: int, records: Sequence[Record], state: PartitionState,
                out: Step) -> EventColumns:
        """Decode the records not yet applied; dead-letter the rejects."""
        progress = state.progress
        fresh = [(r.offset, r.key, r.value) for r in records if r.offset > progress.offset]
        if fresh:
            progress.offset = fresh[-1][0]
            progress.records += len(fresh)
        now_ms = int(self.clock() * 1000)
        events, rejected = decode(self.domain, fresh, now_ms, self.max_ahead_ms, self.max_batch)
        for r in rejected:
            out.deadletters.append((r.key, contract.deadletter(r.reject, self.topic, partition, r.offset)))
            progress.future += r.reject.reason.startswith("future:")
        progress.rejected += len(rejected)
        # Clocks running ahead (yet within the allowed skew) are shown, not judged: so an
        # operator finds the gateway before its events start being refused.
        for i in np.flatnonzero(events.ts > now_ms + AHEAD_NOTED_MS).tolist():
            entity = str(events.entity[i])
            out.ahead[entity] = max(out.ahead.get(entity, 0.0), (int(events.ts[i]) - now_ms) / 1000)
        return events

    def _drop_late(self, partition: int, events: EventColumns, state: PartitionState,
                   out: Step) -> tuple[EventColumns, np.ndarray]:
        """The on-time events, and the stream time just before each."""
        progress = state.progress
        times = stream_times(events.ts, progress.stream_time)
        late = late_mask(events.ts, self.window_ms, self.lateness_ms, times[:-1])
        if len(events):
            progress.stream_time = int(times[-1])
        for i in np.flatnonzero(late).tolist():
            ws = int(window_start(events.ts[i], self.window_ms))
            reason = (f"late: window {iso(ws)} closed at stream time {iso(progress.stream_time)} "
                      f"(allowed lateness {self.lateness_ms // 1000}s)")
            out.deadletters.append((str(events.entity[i]).encode(), contract.deadletter(
                contract.Reject(reason, orjson.dumps(events.event(i))), self.topic, partition,
                int(events.offset[i]))))
        keep = np.flatnonzero(~late)
        progress.late += int(late.sum())
        progress.events += len(keep)
        if len(keep) < len(events):
            events = events.take(keep)
        if len(events):
            newest = int(events.ts.max())
            progress.max_ts = newest if progress.max_ts is None else max(progress.max_ts, newest)
        return events, times[:-1][keep]

    def _fold(self, partition: int, events: EventColumns, slots: np.ndarray, state: PartitionState,
              out: Step) -> None:
        areas = self._areas.setdefault(partition, AreaMap()).of(self.registry, state)
        columns = Columns.of(self.shape, events)
        starts = window_start(events.ts, self.window_ms)
        for ws in np.unique(starts).tolist():
            idx = np.flatnonzero(starts == ws)
            part = columns if len(idx) == len(events) else columns.take(idx)
            mine = slots[idx]
            touched = out.touched.setdefault(ws, Touched())
            touched.entities.append(state.window(ws).fold(mine, part))
            for level in ROLLUP_LEVELS:
                touched.areas.setdefault(level, []).append(state.rollup(ws, level).fold(areas[level][mine], part))

    def _detect(self, events: EventColumns, slots: np.ndarray, before: np.ndarray, state: PartitionState,
                out: Step) -> None:
        assert self.detector is not None
        detections = []
        if len(events):
            detections += self.detector.detect(Batch(events, slots, before), state.detectors)
        if state.progress.stream_time is not None:
            detections += self.detector.silent(state.detectors, state.entities.ids, state.progress.stream_time)
        out.detections += [(d.key, orjson.dumps(d.doc())) for d in detections]

    def _close_due(self, partition: int, state: PartitionState, out: Step) -> None:
        progress = state.progress
        if progress.stream_time is None:
            return
        due = sorted(ws for ws in set(state.windows) | set(state.rollups)
                     if ws + self.window_ms + self.lateness_ms <= progress.stream_time)
        for ws in due:
            entities, rollups = state.close(ws)
            slots = entities.present() if entities is not None else np.empty(0, np.int64)
            out.closed += self.window_records(partition, state, ws, entities, slots, rollups,
                                              {level: b.present() for level, b in rollups.items()}, "closed")
            out.closed_starts.append(ws)
            progress.closes += len(slots)
            progress.closed_through = ws

    # ------------------------------------------------------------ records

    def live_records(self, partition: int, state: PartitionState, ws: int, touched: Touched) -> list[Output]:
        """The changed figures of an open window, for the live publication."""
        entities = state.windows.get(ws)
        rollups = state.rollups.get(ws, {})
        slots = np.unique(np.concatenate(touched.entities)) if touched.entities else np.empty(0, np.int64)
        areas = {level: np.unique(np.concatenate(s)) for level, s in touched.areas.items() if s}
        return self.window_records(partition, state, ws, entities, slots, rollups, areas,
                                   f"live/{state.progress.offset}")

    def open_touched(self, state: PartitionState) -> dict[int, Touched]:
        """Every slot of every open window, as if just changed: what a new owner republishes."""
        out: dict[int, Touched] = {}
        for ws, block in state.windows.items():
            out.setdefault(ws, Touched()).entities.append(block.present())
        for ws, levels in state.rollups.items():
            for level, block in levels.items():
                out.setdefault(ws, Touched()).areas.setdefault(level, []).append(block.present())
        return out

    def window_records(self, partition: int, state: PartitionState, ws: int, entities: Block | None,
                       slots: np.ndarray, rollups: dict[str, Block], areas: dict[str, np.ndarray],
                       tag: str) -> list[Output]:
        """Aggregates records (entity windows) and rollups records (area shares) of one
        window of this partition, at most ROWS_PER_RECORD rows each, keyed
        `<domain>/<partition>|<window start>|<tag>/<chunk>`. They go to the same-numbered
        partition of their topic, so readers see a partition's records in the order sent."""
        head = {"domain": self.domain, "partition": partition, "window_start": ws,
                "window_end": ws + self.window_ms, "closed": tag == "closed"}
        key = f"{self.domain}/{partition}|{ws}|{tag}"
        out: list[Output] = []
        if entities is not None:
            for i, part in enumerate(_chunks(slots)):
                ids = [state.entities.ids[s] for s in part.tolist()]
                out.append(("aggregates", f"{key}/{i}".encode(),
                            orjson.dumps({**head, "entities": ids, "cols": entities.columns(part)}, option=DUMPS)))
        rows = [(level, part) for level, s in areas.items() if level in rollups for part in _chunks(s)]
        for i, group in enumerate(_groups(rows)):
            levels = {level: {"areas": [state.areas[level].ids[s] for s in part.tolist()],
                              "cols": rollups[level].columns(part)} for level, part in group}
            out.append(("rollups", f"{key}/{i}".encode(), orjson.dumps({**head, "levels": levels}, option=DUMPS)))
        return out


def _chunks(slots: np.ndarray) -> Iterator[np.ndarray]:
    for i in range(0, len(slots), ROWS_PER_RECORD):
        yield slots[i:i + ROWS_PER_RECORD]


def _groups(rows: list[tuple[str, np.ndarray]]) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Levels' row chunks packed into records of at most ROWS_PER_RECORD rows."""
    group: list[tuple[str, np.ndarray]] = []
    size = 0
    for level, part in rows:
        if group and size + len(part) > ROWS_PER_RECORD:
            yield group
            group, size = [], 0
        group.append((level, part))
        size += len(part)
    if group:
        yield group
