"""One step of one partition: a batch of raw records → state writes and outputs.

This is the whole processing logic of a worker, free of Faust so it tests without a
broker. The agent (streams/agents.py) feeds it records and applies what it returns.

State lives in one table per domain, all of a partition's keys in the same changelog
partition:
    "#<p>"                       partition progress (offset, stream time, counts, closes)
    "<entity>|<window start>"    window of one entity        {"o", "agg", "closed"}
    "@<p>/<level>:<area>|<ws>"   this partition's share of an area's window
    "!<entity>"                  the entity's detector state (streams/detectors)

Why it is exact across crashes without transactions: within a step, the progress key is
written last, and writes to one changelog partition arrive in order, so after a crash
the surviving writes are a prefix of the step's. A record at or below the progress
offset has all its effects saved and is skipped whole; for a later record, each state
key skips the events whose offset it already holds (its "o"). Late decisions and closes
depend only on the order of records, so a replay decides them the same way.

Events keyed to another partition than their entity's (a gateway keying batches by
anything) are forwarded to their entity's home partition, so each entity's windows have
exactly one owner; the forwarded record names its origin in a header, and the home
partition ignores a re-forward it has already applied.

Detections (a rule firing, persisting or clearing on an entity) are decided from the
entity's detector state, which skips events by offset like the windows do. A replay
after a crash can therefore report a detection again, but always with the same
(rule, entity, episode, seq), which the alert manager ignores the second time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import orjson

from streams import events as contract
from streams.detectors import Batch, Detector, SilenceWatch, new_state
from streams.partitioning import partition_for
from streams.registry import LEVELS, Derived, Registry
from streams.windows import SHAPES, Columns, aggregate_by, late_mask, merge, stream_times

ORIGIN_HEADER = "citybrain-origin"
ROLLUP_LEVELS = LEVELS + ("city",)
# Closed windows stay as markers this long before their tombstones: longer than Faust's
# commit interval, so a replay can only start after the close was saved.
TOMBSTONE_DELAY_MS = 15_000


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    origin: tuple[int, int] | None = None  # (partition, offset) of a forwarded record's source


@dataclass
class Step:
    writes: list[tuple[str, Any]] = field(default_factory=list)  # in order; None deletes
    deadletters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    forwards: list[tuple[int, bytes, bytes, tuple[int, int]]] = field(default_factory=list)
    published: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)  # topic kind, key, doc
    touched: set[str] = field(default_factory=set)  # open window / area keys with new figures
    detections: list[tuple[bytes, bytes]] = field(default_factory=list)  # alert-inputs key, doc


def new_progress() -> dict[str, Any]:
    return {"offset": -1, "records": 0, "events": 0, "rejected": 0, "late": 0, "duplicates": 0,
            "stream_time": None, "max_ts": None, "forwarded": {}, "closed_through": None, "closes": 0,
            "closing": []}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


def progress_key(partition: int) -> str:
    return f"#{partition}"


def window_key(entity: str, ws: int | str) -> str:
    return f"{entity}|{ws}"


def rollup_key(partition: int, level: str, area: str, ws: int | str) -> str:
    return f"@{partition}/{level}:{area}|{ws}"


def detector_key(entity: str) -> str:
    return f"!{entity}"


class PartitionProcessor:
    def __init__(self, domain: str, topic: str, partitions: int, window_ms: int, lateness_ms: int,
                 registry: Registry, max_batch: int = contract.DEFAULT_MAX_BATCH,
                 clock: Callable[[], float] = time.time, detector: Detector | None = None) -> None:
        self.domain, self.topic, self.partitions = domain, topic, partitions
        self.window_ms, self.lateness_ms = window_ms, lateness_ms
        self.shape = SHAPES[domain]
        self.registry, self.max_batch, self.clock = registry, max_batch, clock
        self.detector = detector
        # partition → window start → state keys of that window (open or closed markers)
        self._index: dict[int, dict[int, set[str]]] = {}
        # partition → its entities by when they go silent
        self._watch: dict[int, SilenceWatch] = {}
        # (partition, entity) → its area share keys, one per level, less the window start:
        # five strings built per event cost more than the folding they feed
        self._prefixes: Derived[tuple[int, str], tuple[str, ...]] = Derived(registry, self._rollup_prefixes)

    def forget_partitions(self) -> None:
        """After a rebalance the table holds other partitions: rebuild indexes lazily."""
        self._index.clear()
        self._watch.clear()

    def step(self, partition: int, records: Sequence[Record], state: Mapping[str, Any],
             all_keys: Callable[[], Iterable[str]]) -> Step:
        out = Step()
        pkey = progress_key(partition)
        progress = state.get(pkey) or new_progress()
        index = self._index.get(partition)
        if index is None:
            index = self._index[partition] = self._build_index(partition, all_keys(), state)

        events, offsets = self._accept(partition, records, progress, out)
        on_time, on_offsets, before = self._drop_late(partition, events, offsets, progress, out)
        values: dict[str, Any] = {}

        def current(key: str) -> Any:
            return values[key] if key in values else state.get(key)

        starts = [str(e["ts"] - e["ts"] % self.window_ms) for e in on_time]
        entities = [e["entity"] for e in on_time]
        cols = Columns.of(self.shape, on_time)
        self._fold([window_key(e, ws) for e, ws in zip(entities, starts)], cols, on_offsets, current, values, index)
        areas = [self._prefixes[partition, e] for e in entities]
        for level in range(len(ROLLUP_LEVELS)):
            self._fold([a[level] + ws for a, ws in zip(areas, starts)], cols, on_offsets, current, values, index)
        out.touched.update(values)
        if self.detector is not None:
            self._detect(partition, on_time, on_offsets, before, progress, current, values, out)
        self._close_due(partition, progress, current, values, index, out)
        out.writes.extend(values.items())
        out.writes.append((pkey, progress))
        return out

    def _rollup_prefixes(self, key: tuple[int, str]) -> tuple[str, ...]:
        partition, entity = key
        area = self.registry.area(entity)
        return tuple(rollup_key(partition, level, area.get(level, "city"), "") for level in ROLLUP_LEVELS)

    # ------------------------------------------------------------ stages

    def _accept(self, partition: int, records: Sequence[Record], progress: dict[str, Any],
                out: Step) -> tuple[list[contract.Event], list[int]]:
        """Decode new records; dead-letter rejects; forward events homed elsewhere."""
        events: list[contract.Event] = []
        offsets: list[int] = []
        for rec in records:
            if rec.offset <= progress["offset"]:
                continue  # saved before a crash: every effect of it survived
            progress["offset"] = rec.offset
            progress["records"] += 1
            if rec.origin is not None:
                seen = progress["forwarded"].get(str(rec.origin[0]), -1)
                if rec.origin[1] <= seen:
                    progress["duplicates"] += 1
                    continue
                progress["forwarded"][str(rec.origin[0])] = rec.origin[1]
            good, bad = contract.decode(self.domain, rec.value, self.max_batch)
            for reject in bad:
                out.deadletters.append((rec.key, contract.deadletter(reject, self.topic, partition, rec.offset)))
            progress["rejected"] += len(bad)
            away: dict[int, list[contract.Event]] = defaultdict(list)
            for e in good:
                home = partition_for(e["entity"], self.partitions)
                if home == partition:
                    events.append(e)
                    offsets.append(rec.offset)
                else:
                    away[home].append(e)
            for home, evs in away.items():
                out.forwards.append((home, evs[0]["entity"].encode(),
                                     orjson.dumps({"events": evs}), (partition, rec.offset)))
        return events, offsets

    def _drop_late(self, partition: int, events: list[contract.Event], offsets: list[int],
                   progress: dict[str, Any], out: Step) -> tuple[list[contract.Event], np.ndarray, np.ndarray]:
        """The on-time events, their offsets, and the stream time just before each."""
        ts = np.fromiter((e["ts"] for e in events), np.int64, len(events))
        times = stream_times(ts, progress["stream_time"])
        late = late_mask(ts, self.window_ms, self.lateness_ms, times[:-1])
        if len(ts):
            progress["stream_time"] = int(times[-1])
        off = np.asarray(offsets, dtype=np.int64)
        for i in np.flatnonzero(late):
            e = events[i]
            ws = e["ts"] - e["ts"] % self.window_ms
            reason = (f"late: window {iso(ws)} closed at stream time {iso(progress['stream_time'])} "
                      f"(allowed lateness {self.lateness_ms // 1000}s)")
            out.deadletters.append((e["entity"].encode(), contract.deadletter(
                contract.Reject(reason, orjson.dumps(e)), self.topic, partition, int(off[i]))))
        keep = ~late
        on_time = [e for e, k in zip(events, keep) if k]
        progress["late"] += int(late.sum())
        progress["events"] += len(on_time)
        if on_time:
            newest = int(ts[keep].max())
            progress["max_ts"] = max(progress["max_ts"] or newest, newest)
        return on_time, off[keep], times[:-1][keep]

    def _fold(self, keys: list[str], cols: Columns, offsets: np.ndarray,
              current: Callable[[str], Any], values: dict[str, Any], index: dict[int, set[str]]) -> None:
        """Merge each key's new events into its state: one write per key per step."""
        if not keys:
            return
        stored = {k: current(k) for k in set(keys)}
        fresh = [i for i, k in enumerate(keys) if stored[k] is None or offsets[i] > stored[k]["o"]]
        if len(fresh) < len(keys):
            keys = [keys[i] for i in fresh]
            cols = cols.take(fresh)
            offsets = offsets[fresh]
        last_offset: dict[str, int] = {}
        for k, o in zip(keys, offsets.tolist()):
            last_offset[k] = o  # offsets ascend, so the last one wins
        for k, agg in aggregate_by(cols, keys).items():
            old = stored[k]
            if old is None:
                index.setdefault(int(k.rsplit("|", 1)[1]), set()).add(k)
            values[k] = {"o": last_offset[k], "closed": False,
                         "agg": merge(old["agg"], agg) if old else agg}

    def _detect(self, partition: int, events: list[contract.Event], offsets: np.ndarray,
                before: np.ndarray, progress: dict[str, Any], current: Callable[[str], Any], values: dict[str, Any],
                out: Step) -> None:
        assert self.detector is not None
        watch = self._watch[partition]
        loaded: dict[str, dict[str, Any]] = {}  # one object per entity: the rocksdb store decodes anew

        def state_of(entity: str) -> dict[str, Any]:
            if entity not in loaded:
                loaded[entity] = current(detector_key(entity)) or new_state()
            return loaded[entity]

        fresh = [i for i, (e, o) in enumerate(zip(events, offsets.tolist()))
                 if o > state_of(e["entity"])["o"]]
        detections = []
        if fresh:
            batch = Batch([events[i] for i in fresh], before[fresh])
            states = [state_of(e) for e in batch.entities]
            detections += self.detector.detect(batch, states)
            for entity, st, group in zip(batch.entities, states, batch.groups):
                st["o"] = int(offsets[fresh[int(group.max())]])
                self.detector.watch(watch, entity, st["seen"])
                values[detector_key(entity)] = st
        if progress["stream_time"] is not None:
            for d in self.detector.silent(watch, progress["stream_time"], state_of):
                detections.append(d)
                values[detector_key(d.entity)] = state_of(d.entity)
        out.detections += [(d.key, orjson.dumps(d.doc())) for d in detections]

    def _close_due(self, partition: int, progress: dict[str, Any], current: Callable[[str], Any],
                   values: dict[str, Any], index: dict[int, set[str]], out: Step) -> None:
        stream_time = progress["stream_time"]
        now_ms = int(self.clock() * 1000)
        if stream_time is not None:
            closed_through = progress["closed_through"]
            due = sorted(ws for ws in index
                         if ws + self.window_ms + self.lateness_ms <= stream_time
                         and (closed_through is None or ws > closed_through))
            for ws in due:
                for k in sorted(index[ws]):
                    v = current(k)
                    if v is None or v["closed"]:
                        continue
                    values[k] = {**v, "closed": True}
                    out.published.append(self.publication(k, values[k]))
                    if not k.startswith("@"):  # entity windows; area shares close with them
                        progress["closes"] = progress.get("closes", 0) + 1
                progress["closing"].append([now_ms, ws])
                progress["closed_through"] = ws
        still = []
        for closed_at, ws in progress["closing"]:
            if now_ms - closed_at < TOMBSTONE_DELAY_MS:
                still.append([closed_at, ws])
                continue
            for k in index.pop(ws, ()):
                values[k] = None
        progress["closing"] = still

    # ------------------------------------------------------------ views

    def owner(self, key: str) -> int:
        """The partition a state key belongs to."""
        if key.startswith(("#", "@")):
            return int(key[1:].partition("/")[0])
        entity = key[1:] if key.startswith("!") else key.rpartition("|")[0]
        return partition_for(entity, self.partitions)

    def _build_index(self, partition: int, keys: Iterable[str], state: Mapping[str, Any]) -> dict[int, set[str]]:
        index: dict[int, set[str]] = {}
        watch = self._watch[partition] = SilenceWatch()
        for k in keys:
            if k.startswith("#") or self.owner(k) != partition:
                continue
            if k.startswith("!"):
                last = state[k]["seen"]
                if last is not None and self.detector is not None:
                    self.detector.watch(watch, k[1:], last)
            else:
                index.setdefault(int(k.rpartition("|")[2]), set()).add(k)
        return index

    def publication(self, key: str, value: dict[str, Any]) -> tuple[str, bytes, bytes]:
        """The aggregates- or rollups-topic record for a window or area state key."""
        head, _, ws_text = key.rpartition("|")
        ws = int(ws_text)
        doc: dict[str, Any] = {"domain": self.domain, "window_start": ws,
                               "window_end": ws + self.window_ms, "closed": value["closed"],
                               "agg": value["agg"]}
        if key.startswith("@"):
            partition, _, area = head[1:].partition("/")
            level, _, area_id = area.partition(":")
            doc |= {"level": level, "area": area_id, "partition": int(partition)}
            return "rollups", f"{self.domain}/{level}:{area_id}|{ws}|{partition}".encode(), orjson.dumps(doc)
        doc |= {"entity": head, "area": self.registry.area(head)}
        return "aggregates", f"{self.domain}/{head}|{ws}".encode(), orjson.dumps(doc)
