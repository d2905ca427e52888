"""The city as a map: every registered device where it stands, in the state its open alerts
put it, and the areas ranked by their trouble. Pure functions of the registry and the
alerts read model; the routes in `api/routes/citymap.py` serve them.

A device is *silent* while a silence rule (`*.offline`: no heartbeat or measurement in
time) is open for it, *alerting* while any other alert is open, *normal* otherwise.
Silence wins: a device that has gone dark can't be trusted to say it is well.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from streams.alerting import Alert
from streams.registry import LEVELS, UNASSIGNED, Registry
from streams.rules import SEVERITIES

STATES: tuple[str, ...] = ("normal", "alerting", "silent")
WORST_FIRST = tuple(reversed(SEVERITIES))  # streams.rules lists them mildest first
SILENCE_SUFFIX = ".offline"


def is_open(alert: Alert) -> bool:
    return alert.get("status") != "resolved"


def device_states(alerts: Iterable[Alert]) -> dict[str, str]:
    """Entity id → `alerting` or `silent`, from the open alerts; absent means normal."""
    states: dict[str, str] = {}
    for a in alerts:
        if not is_open(a):
            continue
        if str(a.get("rule", "")).endswith(SILENCE_SUFFIX):
            states[a["entity"]] = "silent"
        else:
            states.setdefault(a["entity"], "alerting")
    return states


class Placements:
    """The registry drawn as rows for a map, rebuilt only when the registry changes: the
    distinct area paths once, and per placed device `[id, domain, lat, lon, path index]`.
    A device without both coordinates can't be drawn; it is counted in `unplaced`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._version = -1
        self.paths: list[list[str]] = []
        self.rows: list[list[Any]] = []
        self.unplaced = 0

    def refresh(self) -> "Placements":
        if self._version == self.registry.version:
            return self
        index: dict[tuple[str, ...], int] = {}
        rows, unplaced = [], 0
        for e in self.registry:
            lat, lon = e.get("lat"), e.get("lon")
            if lat is None or lon is None:
                unplaced += 1
                continue
            path = tuple(e.get(level) or UNASSIGNED for level in LEVELS)
            rows.append([e["id"], e["domain"], lat, lon, index.setdefault(path, len(index))])
        self.paths, self.rows, self.unplaced = [list(p) for p in index], rows, unplaced
        self._version = self.registry.version
        return self


def snapshot(placements: Placements, alerts: Iterable[Alert]) -> dict[str, Any]:
    """Every placed device with its area path and state (an index into `states`)."""
    p = placements.refresh()
    states = device_states(alerts)
    code = {s: i for i, s in enumerate(STATES)}
    return {"version": p.registry.version, "levels": list(LEVELS), "states": list(STATES),
            "paths": p.paths, "unplaced": p.unplaced,
            "devices": [[*row, code[states.get(row[0], "normal")]] for row in p.rows]}


def state_changes(registry: Registry, alerts: Iterable[Alert]) -> dict[str, Any]:
    """The devices that are not normal: what a map already drawn needs to stay current."""
    states = device_states(alerts)
    return {"version": registry.version,
            **{s: sorted(e for e, st in states.items() if st == s) for s in STATES[1:]}}


def parse_within(text: str | None) -> tuple[str, str] | None:
    """`level:area`, e.g. `district:市南区`; ValueError with a reason otherwise."""
    if text is None:
        return None
    level, sep, area = text.partition(":")
    if not sep or level not in LEVELS or not area:
        raise ValueError(f"within: expected level:area with level one of {', '.join(LEVELS)}")
    return level, area


def _trouble(row: dict[str, Any]) -> tuple:
    """Worst first: more alerts of the most severe kind, then of the next, then silent
    devices, then by name so that equal areas keep one order on every replica."""
    return (tuple(-row["by_severity"][s] for s in WORST_FIRST), -row["states"]["silent"],
            -row["states"]["alerting"], row["id"])


def ranking(registry: Registry, alerts: Iterable[Alert], level: str,
            within: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Each area of `level` (inside `within`, if given): its devices by state and domain,
    its open alerts by severity and the worst of them, ordered by trouble."""
    open_alerts = [a for a in alerts if is_open(a)]
    states = device_states(open_alerts)
    rows: dict[str, dict[str, Any]] = {}

    def row(area: dict[str, Any]) -> dict[str, Any] | None:
        if within is not None and area.get(within[0]) != within[1]:
            return None
        name = area.get(level) or UNASSIGNED
        r = rows.get(name)
        if r is None:
            depth = LEVELS.index(level)
            r = rows[name] = {"level": level, "id": name,
                              "path": {lv: area.get(lv) or UNASSIGNED for lv in LEVELS[:depth]},
                              "devices": 0, "domains": Counter(),
                              "states": dict.fromkeys(STATES, 0), "open_alerts": 0,
                              "by_severity": dict.fromkeys(WORST_FIRST, 0)}
        return r

    for e in registry:
        r = row(e)
        if r is not None:
            r["devices"] += 1
            r["domains"][e["domain"]] += 1
            r["states"][states.get(e["id"], "normal")] += 1
    for a in open_alerts:
        r = row(a.get("area") or {})
        if r is not None:
            r["open_alerts"] += 1
            if a.get("severity") in r["by_severity"]:
                r["by_severity"][a["severity"]] += 1
    out = sorted(rows.values(), key=_trouble)
    for r in out:
        r["domains"] = dict(r["domains"])
        r["worst"] = next((s for s in WORST_FIRST if r["by_severity"][s]), None)
    return out
