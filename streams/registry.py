"""Where every gate, detector and feeder is, and its ratings (contract §3, registry entity).

Entities come from a file given at start and from the compacted registry topic, the
topic winning, so a city edits its registry by producing to the topic. An entity the
registry doesn't know is still processed, under the area `unassigned`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Generic, Hashable, Iterable, TypeVar

import orjson

from streams.events import Invalid
from streams.topics import DOMAINS

LEVELS: tuple[str, ...] = ("district", "street", "community", "grid_cell")
UNASSIGNED = "unassigned"
RATINGS = ("rated_kw", "nominal_kv", "free_flow_kmh", "capacity_per_min")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Entity = dict[str, Any]


def parse_entity(doc: Any) -> Entity:
    if not isinstance(doc, dict):
        raise Invalid("registry entity must be a JSON object")
    eid = doc.get("id")
    if not isinstance(eid, str) or not 0 < len(eid) <= 128:
        raise Invalid("registry entity needs a string id of 1..128 characters")
    if doc.get("domain") not in DOMAINS:
        raise Invalid(f"registry entity {eid}: domain must be one of {', '.join(DOMAINS)}")
    for level in LEVELS:
        v = doc.get(level)
        if v is not None and not isinstance(v, str):
            raise Invalid(f"registry entity {eid}: {level} must be a string")
    for name in RATINGS + ("lat", "lon"):
        v = doc.get(name)
        if v is not None and (type(v) is bool or not isinstance(v, (int, float))):
            raise Invalid(f"registry entity {eid}: {name} must be a number")
    return doc


def _line(path: Path, number: int, line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"{path}:{number}: not JSON ({exc})") from None


class Registry:
    def __init__(self, entities: Iterable[Entity] = ()) -> None:
        self._entities: dict[str, Entity] = {}
        self.version = 0  # +1 on every change, so readers can cache what they derive
        for e in entities:
            self.put(e)

    @classmethod
    def from_file(cls, path: Path) -> "Registry":
        """A JSON array of entities, or JSON Lines with one entity per line."""
        text = path.read_bytes()
        try:
            docs = orjson.loads(text)
        except orjson.JSONDecodeError:
            docs = [_line(path, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if isinstance(docs, dict):  # JSON Lines holding a single entity
            docs = [docs]
        if not isinstance(docs, list):
            raise Invalid(f"{path}: expected a JSON array or JSON Lines of entities")
        return cls(parse_entity(d) for d in docs)

    def put(self, entity: Entity) -> None:
        self._entities[entity["id"]] = entity
        self.version += 1

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One registry-topic record: an entity, or a tombstone (null value) removing one.
        A bad record is skipped: the registry describes the city, it must not stop it."""
        if value is None:
            if key is not None:
                self._entities.pop(key.decode(errors="replace"), None)
                self.version += 1
            return
        try:
            self.put(parse_entity(orjson.loads(value)))
        except (orjson.JSONDecodeError, Invalid):
            pass

    def get(self, entity_id: str) -> Entity | None:
        return self._entities.get(entity_id)

    def area(self, entity_id: str) -> dict[str, str]:
        e = self._entities.get(entity_id)
        if e is None:
            return {level: UNASSIGNED for level in LEVELS}
        return {level: e.get(level) or UNASSIGNED for level in LEVELS}

    def __len__(self) -> int:
        return len(self._entities)

    def __iter__(self):
        return iter(self._entities.values())


class Derived(Generic[K, V]):
    """Values derived from entities' registry entries (areas, rule parameters), kept
    until the registry changes. At most `limit` are kept, so event streams naming
    entities the registry doesn't know can't grow it without end."""

    def __init__(self, registry: Registry, derive: Callable[[K], V], limit: int = 200_000) -> None:
        self.registry, self.derive, self.limit = registry, derive, limit
        self._values: dict[K, V] = {}
        self._version = -1

    def __getitem__(self, key: K) -> V:
        if self._version != self.registry.version:
            self._values.clear()
            self._version = self.registry.version
        try:
            return self._values[key]
        except KeyError:
            if len(self._values) >= self.limit:
                self._values.clear()
            value = self._values[key] = self.derive(key)
            return value
