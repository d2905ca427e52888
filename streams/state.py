"""A partition's state, and its stored layout: the one module that knows either.

Per (domain, partition) a worker holds a `PartitionState`:
- progress: the last source offset applied, stream time, counts, and the newest window
  start closed;
- entity windows: per open window start one `Block` (streams/windows.py), a slot per
  entity (`entities` maps ids to slots, for every window of the partition alike);
- area shares: per open window start and level one `Block`, a slot per area;
- the rules' state: columns with a row per entity, the entity's slot (streams/detectors/store.py).

Persistence is a snapshot plus deterministic replay. `encode` turns the whole state into
a few chunks (numpy arrays as raw bytes behind a JSON header); the worker stores them in
its Faust table under `<partition>/<buffer>/<i>` and, last, `<partition>/meta` naming the
buffer, so a crash while a snapshot is written leaves the previous one whole (the two
buffers take turns). The group's committed offset of a source partition never passes
its newest snapshot (streams/transport.py), so after a crash the next owner loads the
snapshot and replays the records after it: every decision depends only on the records'
order, so the replay decides as the first run did, and its outputs repeat identically
(readers deduplicate them). `LAYOUT` is the version of this format; a snapshot of a
version not in `READS` is refused with one line saying what to do. Layout 3 (window counts
64-bit, a state column in every shape) is read, its blocks narrowed as they load
(`Block.from_arrays`); a worker of layout 3 refuses layout 4, whose blocks it would
misread. Layout 2 (the rules' state as a dict per entity) is not migrated: the silence
rules' due times it lacks depend on the rule book, which the stored layout does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import orjson

from streams.detectors.store import RuleState
from streams.registry import LEVELS
from streams.windows import Block, Shape

LAYOUT = 4
READS = (3, 4)
ROLLUP_LEVELS: tuple[str, ...] = LEVELS + ("city",)
CHUNK_BYTES = 256 * 1024  # below Kafka's default 1 MB message limit, with room for batching


# The slot numbers as int objects, one of each shared by every index. A dict's values are
# objects, and Python makes a new 28-byte int for each number above 256, so each index of
# every partition and area level held its own copies: 41 bytes per entity at 10k
# (benchmarks/README.md, Scale).
_SLOT_NUMBERS: list[int] = []


def _numbers(upto: int) -> list[int]:
    """The shared slot numbers, at least `upto` of them (a quarter more at a time)."""
    if len(_SLOT_NUMBERS) < upto:
        _SLOT_NUMBERS.extend(range(len(_SLOT_NUMBERS), max(upto, len(_SLOT_NUMBERS) * 5 // 4)))
    return _SLOT_NUMBERS


class SlotIndex:
    """Ids ↔ dense slots, in order of first appearance; slots are never reused."""

    def __init__(self, ids: list[str] | None = None) -> None:
        self.ids: list[str] = ids or []
        self.slot: dict[str, int] = dict(zip(self.ids, _numbers(len(self.ids))))

    def __len__(self) -> int:
        return len(self.ids)

    def of(self, ids: Any) -> np.ndarray:
        """The slot of each id, adding the new ones."""
        slot, new = self.slot, self.ids
        get = slot.get
        out = np.fromiter((get(k, -1) for k in ids), np.int64, len(ids))
        missing = np.flatnonzero(out < 0)
        numbers = _numbers(len(new) + len(missing))
        for i in missing.tolist():
            k = ids[i]
            if k not in slot:
                slot[k] = numbers[len(new)]
                new.append(k)
            out[i] = slot[k]
        return out


@dataclass
class Progress:
    offset: int = -1  # the last source offset applied
    records: int = 0
    events: int = 0
    rejected: int = 0
    late: int = 0
    future: int = 0
    closes: int = 0
    stream_time: int | None = None
    max_ts: int | None = None
    closed_through: int | None = None  # the newest window start closed

    def public(self) -> dict[str, Any]:
        """What the vitals topic shows of it."""
        return dict(self.__dict__)


@dataclass
class PartitionState:
    shape: Shape
    progress: Progress = field(default_factory=Progress)
    entities: SlotIndex = field(default_factory=SlotIndex)
    windows: dict[int, Block] = field(default_factory=dict)
    areas: dict[str, SlotIndex] = field(default_factory=lambda: {level: SlotIndex() for level in ROLLUP_LEVELS})
    rollups: dict[int, dict[str, Block]] = field(default_factory=dict)
    detectors: RuleState = field(default_factory=RuleState)

    def window(self, ws: int) -> Block:
        block = self.windows.get(ws)
        if block is None:
            block = self.windows[ws] = Block(self.shape, max(64, len(self.entities)))
        return block

    def rollup(self, ws: int, level: str) -> Block:
        levels = self.rollups.setdefault(ws, {})
        block = levels.get(level)
        if block is None:
            block = levels[level] = Block(self.shape, max(16, len(self.areas[level])))
        return block

    def close(self, ws: int) -> tuple[Block | None, dict[str, Block]]:
        """Forget a window; its blocks, for the last publication."""
        return self.windows.pop(ws, None), self.rollups.pop(ws, {})


# ---------------------------------------------------------------- the stored layout


def encode(state: PartitionState) -> list[bytes]:
    """The whole state as chunks of at most CHUNK_BYTES (the first holds the header)."""
    arrays: list[np.ndarray] = []
    windows = {}
    for ws, block in sorted(state.windows.items()):
        windows[str(ws)] = _put(arrays, block, len(state.entities))
    rollups = {str(ws): {level: _put(arrays, b, len(state.areas[level])) for level, b in levels.items()}
               for ws, levels in sorted(state.rollups.items())}
    rules = state.detectors
    columns = {}
    for name, a in rules.used().items():
        columns[name] = len(arrays)
        arrays.append(a)
    header = {"layout": LAYOUT, "progress": state.progress.__dict__, "entities": state.entities.ids,
              "areas": {level: index.ids for level, index in state.areas.items()},
              "windows": windows, "rollups": rollups,
              "rules": {"rows": rules.rows, "columns": columns,
                        "sparse": {name: list(rows.items()) for name, rows in rules.sparse.items()}},
              "arrays": [(a.dtype.str, a.shape) for a in arrays]}
    blob = orjson.dumps(header)
    payload = b"".join([len(blob).to_bytes(8, "big"), blob] + [np.ascontiguousarray(a).tobytes() for a in arrays])
    return [payload[i:i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]


def decode(shape: Shape, chunks: list[bytes]) -> PartitionState:
    payload = b"".join(chunks)
    size = int.from_bytes(payload[:8], "big")
    header = orjson.loads(payload[8:8 + size])
    if header.get("layout") not in READS:
        raise ValueError(f"partition state layout {header.get('layout')!r}; this worker reads {' and '.join(map(str, READS))}"
                         f"{' (layout 2 held the rules state per entity)' if header.get('layout') == 2 else ''}: "
                         "run the matching version, or reset the worker's tables")
    arrays: list[np.ndarray] = []
    at = 8 + size
    for dtype, dims in header["arrays"]:
        a = np.frombuffer(payload, np.dtype(dtype), int(np.prod(dims)), at).reshape(dims).copy()
        arrays.append(a)
        at += a.nbytes
    state = PartitionState(shape, Progress(**header["progress"]), SlotIndex(header["entities"]))
    state.areas = {level: SlotIndex(ids) for level, ids in header["areas"].items()}
    state.windows = {int(ws): _get(shape, arrays, at_) for ws, at_ in header["windows"].items()}
    state.rollups = {int(ws): {level: _get(shape, arrays, at_) for level, at_ in levels.items()}
                     for ws, levels in header["rollups"].items()}
    rules = header["rules"]
    state.detectors = RuleState(rules["rows"], {name: arrays[i] for name, i in rules["columns"].items()},
                                {name: dict(rows) for name, rows in rules["sparse"].items()})
    return state


def _put(arrays: list[np.ndarray], block: Block, slots: int) -> int:
    """A block's arrays, cut to the slots in use (the rest is room to grow)."""
    first = len(arrays)
    arrays.extend(a[..., :slots] for a in block.arrays().values())
    return first


def _get(shape: Shape, arrays: list[np.ndarray], first: int) -> Block:
    return Block.from_arrays(shape, dict(zip(Block.ARRAYS, arrays[first:first + len(Block.ARRAYS)])))


# ---------------------------------------------------------------- table keys


def meta_key(partition: int) -> str:
    return f"{partition}/meta"


def chunk_key(partition: int, buffer: str, i: int) -> str:
    return f"{partition}/{buffer}/{i}"


@dataclass(frozen=True)
class Snapshot:
    """What `<partition>/meta` says: which buffer holds the newest snapshot, and of what."""

    buffer: str
    chunks: int
    offset: int
    size: int

    def to_bytes(self) -> bytes:
        return orjson.dumps({"layout": LAYOUT, **self.__dict__})

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Snapshot":
        doc = orjson.loads(raw)
        return cls(doc["buffer"], doc["chunks"], doc["offset"], doc["size"])


def snapshot_writes(partition: int, state: PartitionState, previous: Snapshot | None
                    ) -> tuple[Snapshot, list[tuple[str, bytes]]]:
    """The table writes that store `state`, meta last, into the buffer the previous
    snapshot doesn't use."""
    return chunk_writes(partition, encode(state), state.progress.offset, previous)


def chunk_writes(partition: int, chunks: list[bytes], offset: int, previous: Snapshot | None
                 ) -> tuple[Snapshot, list[tuple[str, bytes]]]:
    """The table writes that store a snapshot's `chunks` (of any state, through source
    `offset`) in this layout, meta last, into the buffer the previous one doesn't use."""
    buffer = "b" if previous is not None and previous.buffer == "a" else "a"
    meta = Snapshot(buffer, len(chunks), offset, sum(map(len, chunks)))
    writes = [(chunk_key(partition, buffer, i), c) for i, c in enumerate(chunks)]
    return meta, writes + [(meta_key(partition), meta.to_bytes())]


def load(shape: Shape, partition: int, read: Callable[[str], bytes | None]
         ) -> tuple[PartitionState, Snapshot | None]:
    """The partition's newest snapshot from the table (`read` gets a key's value), or a
    new state when there is none."""
    raw = read(meta_key(partition))
    if raw is None:
        return PartitionState(shape), None
    meta = Snapshot.from_bytes(raw)
    return decode(shape, snapshot_chunks(partition, meta, read)), meta


def snapshot_chunks(partition: int, meta: Snapshot, read: Callable[[str], bytes | None]) -> list[bytes]:
    """The chunks `meta` names (of any state stored in this layout). Raises ValueError
    when one is missing."""
    chunks = [read(chunk_key(partition, meta.buffer, i)) for i in range(meta.chunks)]
    if any(c is None for c in chunks):
        raise ValueError(f"partition {partition}: snapshot {meta} has missing chunks")
    return chunks  # type: ignore[return-value]

