"""Incidents: one cause, one incident (contract §8). A pure step, free of Kafka.

A feeder that goes down takes the gates and detectors it powers with it, and each of them
raises its own offline alert. Here alerts that share a cause are grouped under one
incident, so people and integrations see one problem with its children:

- **feeder incident**: a feeder's `grid.outage` or `grid.offline` alert is the cause; the
  offline alerts of devices whose registry entry names that feeder (`"feeder": "F-0001"`,
  contract §3) are its children;
- **area incident**: offline alerts of `area_min` or more devices of one grid cell that no
  feeder explains become one incident of that grid cell.

Inputs are alert states (`member`), keyed by the district of the cause they may share
(`input_key`), so everything that can be grouped meets on one partition, in one state.
`apply` folds one input into that state and returns the incidents it changed.

Arrival order does not decide grouping. An effect attaches to a cause whose alert started
at most `hold_s` after the effect started, whichever of the two arrives first. An effect
no cause has claimed is held back for `hold_s` of stream time (the latest alert time the
state has seen) before it may count towards an area incident, so a cause that arrives
within the hold-back still claims it. Ids are hashes of what the incident is (kind and
cause alert, or grid cell and first child), and a replayed input (same alert `seq`)
changes nothing, so a crash or replay repeats the same incidents.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from typing import Any

from streams.alerting import OPEN, iso, ms
from streams.registry import LEVELS
from streams.rules import SEVERITIES

CAUSES = {"grid.outage": "feeder_outage", "grid.offline": "feeder_offline"}
# Devices going silent: gates and road detectors (streams/rules.py).
EFFECTS = ("gate.offline", "traffic.offline")
AREA = "area_outage"
PRUNE_EVERY_MS = 60_000  # closed incidents and resolved alerts are looked for this often (stream time)


@dataclass(frozen=True)
class Grouping:
    hold_s: float = 60.0  # an effect waits this long (stream time) for its cause
    area_min: int = 3  # offline devices of one grid cell that make an area incident
    keep_s: float = 86_400.0  # closed incidents stay in the state this long, for late repeats


class BadInput(ValueError):
    """An incident input that can't be applied; the message is the dead-letter reason."""


def incident_id(kind: str, anchor: str) -> str:
    return hashlib.blake2b(f"incident|{kind}|{anchor}".encode(), digest_size=8).hexdigest()


def relevant(alert: dict[str, Any]) -> bool:
    return alert.get("rule") in CAUSES or alert.get("rule") in EFFECTS


def _ms(stamp: str | None) -> int | None:
    return None if stamp is None else ms(stamp)


def member(alert: dict[str, Any], feeder: str | None) -> dict[str, Any]:
    """The part of an alert state grouping needs; `feeder` powers an effect's device."""
    return {"id": alert["id"], "rule": alert["rule"], "entity": alert["entity"],
            "severity": alert["severity"], "status": alert["status"], "seq": alert["seq"],
            "area": alert["area"], "feeder": alert["entity"] if alert["rule"] in CAUSES else feeder,
            "started": _ms(alert["started_at"]), "updated": _ms(alert["updated_at"]),
            "resolved": _ms(alert.get("resolved_at"))}


def input_key(doc: dict[str, Any], feeder_district: str | None) -> bytes:
    """An effect goes to its feeder's district, where that feeder's own alerts go."""
    return (feeder_district or doc["area"].get("district") or "unassigned").encode()


def _check(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadInput("incident input must be an object")
    for name, kind in (("id", str), ("rule", str), ("entity", str), ("severity", str), ("status", str),
                       ("seq", int), ("area", dict), ("started", int), ("updated", int)):
        if not isinstance(doc.get(name), kind) or isinstance(doc.get(name), bool):
            raise BadInput(f"incident input: {name} must be {kind.__name__}")
    if not relevant(doc) or doc["severity"] not in SEVERITIES:
        raise BadInput("incident input: not a cause or effect rule, or unknown severity")
    return doc


def _is_open(a: dict[str, Any]) -> bool:
    return a["status"] in OPEN


def _claims(cause: dict[str, Any], effect: dict[str, Any], hold_ms: int) -> bool:
    """Whether `cause` explains `effect`: same feeder, and the effect started while the
    cause was open, give or take the hold-back (a device silent since long before, or
    long after the feeder came back, is not it). Times only, so arrival order can't matter."""
    ended = cause["resolved"] if cause["resolved"] is not None and not _is_open(cause) else None
    return (effect["feeder"] == cause["feeder"] and effect["started"] >= cause["started"] - hold_ms
            and (ended is None or effect["started"] <= ended + hold_ms))


def apply(state: dict[str, Any] | None, doc: Any, grouping: Grouping) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fold one alert state into a district's grouping state; return the new state and
    the incidents that changed (each with its `seq` raised). Raises BadInput."""
    doc = _check(doc)
    state = _indexed(state or {"t": 0, "alerts": {}, "incidents": {}})
    alerts, incidents, ix = state["alerts"], state["incidents"], state["ix"]
    known = alerts.get(doc["id"])
    if known is not None and doc["seq"] <= known["seq"]:
        return state, []  # a repeat: replayed, or read again after a crash
    if known is not None:
        _unplace(ix, known)
    a = {**doc, "incident": known["incident"] if known else None,
         "released": known["released"] if known else False}
    alerts[a["id"]] = a
    back = _place(ix, a)  # an effect released before, open again, is loose at once
    state["t"] = max(state["t"], a["updated"], a["resolved"] or 0)
    hold_ms = int(grouping.hold_s * 1000)
    touched = {a["incident"]} if a["incident"] else set()
    if a["rule"] in CAUSES and a["incident"] is None:
        # A feeder has one incident at a time: its second alert (silent and open at once)
        # joins the first one's incident.
        iid = _feeder_incident(state, a, hold_ms) or _open(state, CAUSES[a["rule"]], a["id"], a["area"], a)
        _join(state, a, iid)
        touched.add(iid)
        for eid in list(ix["unclaimed"].get(a["feeder"], ())):
            if _claims(a, alerts[eid], hold_ms):
                _join(state, alerts[eid], iid)
    elif a["rule"] in EFFECTS and a["incident"] is None:
        iid = _feeder_incident(state, a, hold_ms)
        if iid is not None:
            _join(state, a, iid)
            touched.add(iid)
    touched |= _release(state, grouping, hold_ms, {back} - {None})
    changed = [_refresh(state, incidents[i]) for i in sorted(touched) if i in incidents]
    _prune(state, int(grouping.keep_s * 1000))
    return state, [c for c in changed if c is not None]


# ---------------------------------------------------------------- the state's indexes
#
# Everything `apply` looks up is indexed in the state (`ix`), so an input costs what it
# touches, not the district's size: scanning and sorting every alert of the district per
# input took 3.4 ms an input with 10,000 devices silent in one district, 34 s of CPU in
# all (benchmarks/README.md, Incidents). The indexes are derived from `alerts` and
# `incidents` alone, and a state stored without them is indexed as it loads (`_indexed`).
#   members:   incident id → ids of the alerts grouped under it
#   causes:    feeder → ids of the incidents its alerts caused
#   unclaimed: feeder ("" for none) → ids of the effects under no incident (a dict used as
#              an ordered set, as `loose`: thousands of devices without a feeder may be)
#   pending:   [started, id] of the open effects under no incident not yet held back
#              hold_s, in that order
#   loose:     grid cell → ids of the open effects under no incident past their hold-back
#   areas:     grid cell → ids of its open area incidents


def _indexed(state: dict[str, Any]) -> dict[str, Any]:
    if "ix" in state:
        return state
    alerts, incidents = state["alerts"], state["incidents"]
    state["ix"] = {"members": {}, "causes": {}, "unclaimed": {}, "pending": [], "loose": {}, "areas": {}}
    state.setdefault("pruned", state["t"])
    for iid in sorted(incidents):
        _index_incident(state["ix"], incidents[iid])
    for a in alerts.values():
        if a["incident"] is not None:
            state["ix"]["members"].setdefault(a["incident"], []).append(a["id"])
        _place(state["ix"], a)
    return state


def _cell(a: dict[str, Any]) -> str:
    return a["area"].get("grid_cell") or "unassigned"


def _place(ix: dict[str, Any], a: dict[str, Any]) -> str | None:
    """Index an effect under no incident by what it waits for: a cause of its feeder, its
    hold-back to pass, or more of its grid cell (that cell returned)."""
    if a["rule"] not in EFFECTS or a["incident"] is not None:
        return None
    ix["unclaimed"].setdefault(a["feeder"] or "", {})[a["id"]] = None
    if not _is_open(a):
        return None
    if a["released"]:
        ix["loose"].setdefault(_cell(a), {})[a["id"]] = None
        return _cell(a)
    bisect.insort(ix["pending"], [a["started"], a["id"]])
    return None


def _unplace(ix: dict[str, Any], a: dict[str, Any]) -> None:
    """Undo `_place` (the alert is about to change)."""
    if a["rule"] not in EFFECTS or a["incident"] is not None:
        return
    _drop(ix["unclaimed"], a["feeder"] or "", a["id"])
    if not _is_open(a):
        return
    if a["released"]:
        _drop(ix["loose"], _cell(a), a["id"])
    else:
        pending = ix["pending"]
        at = bisect.bisect_left(pending, [a["started"], a["id"]])
        if at < len(pending) and pending[at] == [a["started"], a["id"]]:
            del pending[at]


def _drop(index: dict[str, Any], key: str, item: str) -> None:
    """Take `item` out of `index[key]` (a list, or a dict used as an ordered set), and the
    key with its last item."""
    items = index.get(key)
    if items is not None and item in items:
        if isinstance(items, dict):
            del items[item]
        else:
            items.remove(item)
        if not items:
            del index[key]


def _join(state: dict[str, Any], a: dict[str, Any], iid: str) -> None:
    """Group alert `a` (under no incident yet) under incident `iid`."""
    _unplace(state["ix"], a)
    a["incident"] = iid
    state["ix"]["members"].setdefault(iid, []).append(a["id"])


def _index_incident(ix: dict[str, Any], inc: dict[str, Any]) -> None:
    if inc["kind"] != AREA:
        ix["causes"].setdefault(inc["feeder"], []).append(inc["id"])
    elif inc["status"] == "open":
        ix["areas"].setdefault(inc["area"]["grid_cell"], []).append(inc["id"])


def _feeder_incident(state: dict[str, Any], a: dict[str, Any], hold_ms: int) -> str | None:
    """The incident of a cause alert of `a`'s feeder that explains `a`, if any."""
    for iid in sorted(state["ix"]["causes"].get(a["feeder"], ())):
        cause = state["alerts"].get(state["incidents"][iid]["cause"] or "")
        if cause is not None and cause["id"] != a["id"] and _claims(cause, a, hold_ms):
            return iid
    return None


def _open(state: dict[str, Any], kind: str, anchor: str, area: dict[str, str], first: dict[str, Any]) -> str:
    incidents = state["incidents"]
    iid = incident_id(kind, anchor)
    if iid not in incidents:
        incidents[iid] = {"id": iid, "kind": kind, "status": "open",
                          "cause": first["id"] if kind != AREA else None,
                          "feeder": first["feeder"] if kind != AREA else None, "children": [],
                          "area": {level: area.get(level, "unassigned") for level in LEVELS},
                          "severity": first["severity"], "opened_at": iso(first["started"]),
                          "closed_at": None, "updated_at": iso(first["updated"]), "seq": 0}
        _index_incident(state["ix"], incidents[iid])
    return iid


def _release(state: dict[str, Any], grouping: Grouping, hold_ms: int, cells: set[str]) -> set[str]:
    """Effects held back past `hold_s` with no cause count towards their grid cell's area
    incident: joining an open one, or opening one when `area_min` of them are loose. Only
    a cell an effect was released into now, or came back open in (`cells`), or one with
    loose effects and an open area incident (reopened: a member firing again) can change."""
    alerts, ix = state["alerts"], state["ix"]
    pending = ix["pending"]
    due = bisect.bisect_right(pending, state["t"] - hold_ms, key=lambda p: p[0])
    cells = set(cells)
    for _, eid in pending[:due]:
        e = alerts[eid]
        e["released"] = True
        ix["loose"].setdefault(_cell(e), {})[eid] = None
        cells.add(_cell(e))
    del pending[:due]
    touched = set()
    for cell in sorted(cells | (set(ix["loose"]) & set(ix["areas"]))):
        loose = sorted((alerts[eid] for eid in ix["loose"].get(cell, ())), key=lambda e: (e["started"], e["id"]))
        current = min(ix["areas"].get(cell, ()), default=None)
        if not loose or (current is None and len(loose) < grouping.area_min):
            continue
        iid = current or _open(state, AREA, f"{cell}|{loose[0]['id']}", loose[0]["area"], loose[0])
        for e in loose:
            _join(state, e, iid)
        touched.add(iid)
    return touched


def _refresh(state: dict[str, Any], inc: dict[str, Any]) -> dict[str, Any] | None:
    """Recompute an incident from its members; the incident when it changed."""
    alerts = state["alerts"]
    members = sorted((alerts[i] for i in state["ix"]["members"].get(inc["id"], ())),
                     key=lambda a: (a["started"], a["id"]))
    children = [a["id"] for a in members if a["id"] != inc["cause"]]
    severity = max((a["severity"] for a in members), key=SEVERITIES.index, default=inc["severity"])
    still = any(_is_open(a) for a in members)
    closed = None if still else iso(max(a["resolved"] or a["updated"] for a in members))
    new = {"children": children, "severity": severity, "status": "open" if still else "closed",
           "opened_at": iso(min(a["started"] for a in members)),
           "closed_at": closed, "updated_at": iso(max(a["resolved"] or a["updated"] for a in members))}
    if inc["seq"] and all(inc[k] == v for k, v in new.items()):
        return None
    if inc["kind"] == AREA and new["status"] != inc["status"]:
        if new["status"] == "open":
            state["ix"]["areas"].setdefault(inc["area"]["grid_cell"], []).append(inc["id"])
        else:
            _drop(state["ix"]["areas"], inc["area"]["grid_cell"], inc["id"])
    inc.update(new, seq=inc["seq"] + 1)
    return dict(inc)


def _prune(state: dict[str, Any], keep_ms: int) -> None:
    """Forget closed incidents and resolved alerts `keep_s` behind stream time: at most
    once a minute of stream time, as it looks at every one."""
    if state["t"] < state["pruned"] + PRUNE_EVERY_MS:
        return
    state["pruned"] = state["t"]
    horizon, ix = state["t"] - keep_ms, state["ix"]
    gone = {i for i, inc in state["incidents"].items()
            if inc["status"] == "closed" and (_ms(inc["closed_at"]) or 0) < horizon}
    for i in gone:
        inc = state["incidents"].pop(i)
        ix["members"].pop(i, None)
        if inc["kind"] != AREA:
            _drop(ix["causes"], inc["feeder"], i)
    for aid in [aid for aid, a in state["alerts"].items()
                if not _is_open(a) and (a["incident"] in gone or a["incident"] is None)
                and (a["resolved"] or a["updated"]) < horizon]:
        _unplace(ix, state["alerts"].pop(aid))
