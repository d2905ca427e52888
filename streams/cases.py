"""Cases: the grid-management workflow (网格化, contract §8). A pure step, free of Kafka.

An incident opens a case for the unit of its grid cell. People move it on; the clock
moves it up when they don't:

    dispatched ──accept──▶ accepted ──feedback──▶ handled ──verify──▶ verified ──close──▶ closed
        │                     │  └────────────────────close──────────────────────────────▲
        └───────return────────┴──▶ returned (one level up, which accepts it in turn)

- Every case has, at the level where it sits, a time to accept it and a time to handle it
  (`Limits`, per severity and level). Past one, it escalates (督办): one level up
  (grid cell → community → street → district), to that level's unit, and both clocks
  start again there. It keeps climbing until it is handled or reaches the district.
- Everything that changes the cases of a partition of the case-inputs topic arrives on
  it, in order: `open` (from the incident agent), commands from the API (`accept`,
  `feedback`, `verify`, `close`, `return`) and `tick`s that carry the clock. Time comes
  only from the inputs, so a replay after a crash decides exactly as the first run did:
  no second case, escalation or history entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from streams.alerting import iso, ms
from streams.registry import LEVELS
from streams.rules import CATALOGUE, SEVERITIES

UP = {"grid_cell": "community", "community": "street", "street": "district"}  # who supervises whom
OPEN = ("dispatched", "accepted", "handled", "verified", "returned")
WAITING = ("dispatched", "returned")  # to be accepted at their level
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {  # command → (from, to)
    "accept": (WAITING, "accepted"),
    "feedback": (("accepted",), "handled"),
    "verify": (("handled",), "verified"),
    "close": (("accepted", "handled", "verified"), "closed"),
    "return": (("dispatched", "accepted"), "returned"),
}
# A unit's name when the cases file names none: what the level's office is called.
UNIT_SUFFIX = {"grid_cell": "网格员", "community": "社区居委会", "street": "街道办事处", "district": "区指挥中心"}
HISTORY_KEEP = 100


class BadInput(ValueError):
    """A case input that can't be applied; the message is the dead-letter reason."""


class CasesError(ValueError):
    """A cases file that can't be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Limits:
    """Seconds to accept and to handle a case at a level, by severity; unit names."""

    accept_s: float = 1800.0
    handle_s: float = 86_400.0
    # (severity or None, level or None) → {"accept_s": …, "handle_s": …}; the most
    # specific match wins, field by field: severity and level, level, severity, default.
    table: dict[tuple[str | None, str | None], dict[str, float]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # area name → its unit
    open_for: frozenset[str] = frozenset()  # rules whose alerts open a case of their own
    keep_s: float = 86_400.0  # closed cases stay in the state this long

    def of(self, severity: str, level: str) -> tuple[float, float]:
        out = {"accept_s": self.accept_s, "handle_s": self.handle_s}
        for key in ((severity, None), (None, level), (severity, level)):
            out.update(self.table.get(key, {}))
        return out["accept_s"], out["handle_s"]

    def unit(self, area: dict[str, str], level: str) -> str:
        name = area.get(level) or "unassigned"
        return self.units.get(name) or f"{name}{UNIT_SUFFIX[level]}"

    @classmethod
    def from_file(cls, path: Path, accept_s: float, handle_s: float) -> "Limits":
        """A YAML or JSON file: `limits`, a list of {severity?, level?, accept_s?, handle_s?};
        `units`, a mapping of area names to the names of their units; `open_for`, rules
        whose alerts open a case each (incidents always do)."""
        try:
            text = path.read_text(encoding="utf-8")
            doc = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except OSError as exc:
            raise CasesError(f"{path}: {exc.strerror or exc}") from None
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise CasesError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                             f"{str(exc).splitlines()[0]}") from None
        doc = doc or {}
        if not isinstance(doc, dict) or set(doc) - {"limits", "units", "open_for"}:
            raise CasesError(f"{path}: expected a mapping with 'limits', 'units' and/or 'open_for'")
        table: dict[tuple[str | None, str | None], dict[str, float]] = {}
        for i, row in enumerate(doc.get("limits") or []):
            where = f"{path}: limits[{i}]"
            if not isinstance(row, dict) or set(row) - {"severity", "level", "accept_s", "handle_s"}:
                raise CasesError(f"{where}: expected a mapping of severity, level, accept_s, handle_s")
            if row.get("severity") not in (None, *SEVERITIES):
                raise CasesError(f"{where}.severity: {row['severity']!r} is not one of {', '.join(SEVERITIES)}")
            if row.get("level") not in (None, *LEVELS):
                raise CasesError(f"{where}.level: {row['level']!r} is not one of {', '.join(LEVELS)}")
            times = {k: row[k] for k in ("accept_s", "handle_s") if k in row}
            for k, v in times.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                    raise CasesError(f"{where}.{k}: expected a positive number of seconds, got {v!r}")
            table.setdefault((row.get("severity"), row.get("level")), {}).update(times)
        units = doc.get("units") or {}
        if not isinstance(units, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                  for k, v in units.items()):
            raise CasesError(f"{path}: units: expected a mapping of area names to unit names")
        open_for = doc.get("open_for") or []
        if not isinstance(open_for, list) or set(open_for) - set(CATALOGUE):
            raise CasesError(f"{path}: open_for: expected a list of rules of the catalogue ({', '.join(CATALOGUE)})")
        return cls(accept_s, handle_s, table, units, frozenset(open_for))


def case_id(incident_id: str) -> str:
    return hashlib.blake2b(f"case|{incident_id}".encode(), digest_size=8).hexdigest()


def opening(source: str, doc: dict[str, Any], at_ms: int) -> dict[str, Any]:
    """The input that opens the case of an incident or an alert (`source`), as the
    incident agent or the alerts' re-key agent sends it."""
    return {"kind": "open", "id": case_id(doc["id"]), "incident": None, "alert": None, source: doc["id"],
            "area": doc["area"], "severity": doc["severity"], "at": at_ms}


def command(kind: str, case: dict[str, Any], by: str, note: str | None, at_ms: int) -> dict[str, Any]:
    """A person's command, as the API sends it."""
    return {"kind": kind, "id": case["id"], "by": by, "note": note, "at": at_ms}


def _check(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("kind") not in ("open", "tick", *COMMANDS):
        raise BadInput(f"case input must be an object with kind open, tick or one of {', '.join(COMMANDS)}")
    need = {"open": (("id", str), ("area", dict), ("severity", str)),
            "tick": ()}.get(doc["kind"], (("id", str), ("by", str)))
    for name, kind in need + (("at", int),):
        if not isinstance(doc.get(name), kind) or isinstance(doc.get(name), bool):
            raise BadInput(f"case input {doc['kind']}: {name} must be {kind.__name__}")
    if doc["kind"] == "open" and not isinstance(doc.get("incident") or doc.get("alert"), str):
        raise BadInput("case input open: needs the id of its incident or alert")
    if doc["kind"] == "open" and doc["severity"] not in SEVERITIES:
        raise BadInput(f"case input open: unknown severity {doc['severity']!r}")
    return doc


def apply(state: dict[str, Any] | None, doc: Any, limits: Limits) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fold one input into a partition's cases; return the state and the cases that
    changed. Raises BadInput."""
    doc = _check(doc)
    state = state or {"cases": {}, "t": 0}
    cases, at = state["cases"], doc["at"]
    state["t"] = max(state["t"], at)
    changed: list[dict[str, Any]] = []
    if doc["kind"] == "open":
        if doc["id"] not in cases:  # a repeat of an incident's first state opens nothing
            cases[doc["id"]] = case = _new(doc, limits)
            changed.append(case)
    elif doc["kind"] == "tick":
        for cid in sorted(cases):
            if _overdue(cases[cid], at) and _escalate(cases[cid], at, limits):
                changed.append(cases[cid])
    else:
        case = cases.get(doc["id"])
        allowed, to = COMMANDS[doc["kind"]]
        if case is not None and case["status"] in allowed:
            _move(case, doc, to, limits)
            changed.append(case)
    _prune(state, limits)
    return state, changed


def overdue(case: dict[str, Any], now_ms: int) -> bool:
    """Past its time to accept (waiting) or to handle (accepted) at its level."""
    return _overdue(case, now_ms)


def _overdue(case: dict[str, Any], at: int) -> bool:
    if case["status"] in WAITING:
        return at > ms(case["accept_by"])
    return case["status"] == "accepted" and at > ms(case["handle_by"])


def _new(doc: dict[str, Any], limits: Limits) -> dict[str, Any]:
    area = {level: doc["area"].get(level) or "unassigned" for level in LEVELS}
    case = {"id": doc["id"], "incident": doc.get("incident"), "alert": doc.get("alert"), "status": "dispatched",
            "level": "grid_cell", "unit": limits.unit(area, "grid_cell"), "area": area,
            "severity": doc["severity"], "accept_by": None, "handle_by": None, "escalations": 0,
            "opened_at": iso(doc["at"]), "accepted_at": None, "handled_at": None, "closed_at": None,
            "on_time": None, "updated_at": iso(doc["at"]), "seq": 0, "transitions": 0, "history": []}
    _clocks(case, doc["at"], limits)
    source = "incident" if case["incident"] else "alert"
    _record(case, doc["at"], "dispatched", "system", f"{source} {case[source]}")
    return case


def _clocks(case: dict[str, Any], at: int, limits: Limits) -> None:
    accept_s, handle_s = limits.of(case["severity"], case["level"])
    case["accept_by"], case["handle_by"] = iso(at + int(accept_s * 1000)), iso(at + int(handle_s * 1000))


def _escalate(case: dict[str, Any], at: int, limits: Limits) -> bool:
    level = UP.get(case["level"])
    if level is None:
        return False  # the district is the top; it stays overdue there, in sight
    what = "accepted" if case["status"] in WAITING else "handled"
    note = f"not {what} in time by {case['unit']}"
    case.update(level=level, unit=limits.unit(case["area"], level), escalations=case["escalations"] + 1)
    _clocks(case, at, limits)
    _record(case, at, "escalated", "system", note)
    return True


def _move(case: dict[str, Any], doc: dict[str, Any], to: str, limits: Limits) -> None:
    at = doc["at"]
    case["status"] = to
    if to == "accepted" and case["accepted_at"] is None:
        case["accepted_at"] = iso(at)
    elif to == "handled":
        case["handled_at"] = iso(at)
    elif to == "closed":
        case["closed_at"] = iso(at)
        # On time: never escalated, and closed within the time to handle where it sat.
        case["on_time"] = case["escalations"] == 0 and at <= ms(case["handle_by"])
    elif to == "returned":
        # Wrong unit: back to the level that dispatched it, which accepts it or sends it on.
        case.update(level=UP.get(case["level"], case["level"]))
        case["unit"] = limits.unit(case["area"], case["level"])
        _clocks(case, at, limits)
    _record(case, at, to, doc["by"], doc.get("note"))


def _record(case: dict[str, Any], at: int, action: str, by: str, note: str | None) -> None:
    case["seq"] += 1
    case["transitions"] += 1
    case["updated_at"] = iso(at)
    case["history"].append({"n": case["transitions"], "at": iso(at), "action": action, "status": case["status"],
                            "by": by, "level": case["level"], "unit": case["unit"], "note": note})
    if len(case["history"]) > HISTORY_KEEP:
        del case["history"][1]


def _prune(state: dict[str, Any], limits: Limits) -> None:
    horizon = state["t"] - int(limits.keep_s * 1000)
    for cid in [c for c, case in state["cases"].items()
                if case["status"] == "closed" and ms(case["closed_at"]) < horizon]:
        del state["cases"][cid]
