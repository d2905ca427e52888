"""The incidents read model: the latest state of every incident (contract §8), from the
compacted incidents topic, read from its beginning by every API replica."""

from __future__ import annotations

from typing import Any

import orjson


class IncidentView:
    def __init__(self) -> None:
        self.incidents: dict[str, dict[str, Any]] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            incident = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(incident, dict) or not isinstance(incident.get("id"), str):
            return
        held = self.incidents.get(incident["id"])
        if held is not None and held.get("seq", 0) >= incident.get("seq", 0):
            return  # a worker's replay repeats a state already read
        self.incidents[incident["id"]] = incident

    def open_count(self) -> int:
        return sum(1 for i in self.incidents.values() if i["status"] == "open")
