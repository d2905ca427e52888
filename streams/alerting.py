"""The alert lifecycle: detections and people's commands in, alert states out (contract §4).

One alert per problem. Everything that can change the alert of a (rule, entity) pair
arrives on one partition of the alert-inputs topic, keyed `<rule>|<entity>`, in order:
the detectors' reports and the ack/resolve commands from any API replica. `apply` folds
one input into that pair's state and returns the alert as it now is, when it changed:

    firing ──ack──▶ acknowledged ──┐
       │                           ├──(condition cleared, or a person resolves)──▶ resolved
       └───────────────────────────┘
    resolved ──(the condition returns within FLAP)──▶ firing again, same alert

- A detection carries (episode, seq); a report already applied is ignored, so the
  at-least-once replays of the workers never make a second alert or count twice.
- The alert id is a hash of (rule, entity, episode): stable while the alert is open, and
  a recurrence after the flap window opens a new alert with a new id.
- Severity only rises: to the detection's when it reports worse, and one step when an
  alert has fired unacknowledged for `escalate_after_s`.
- An alert a person resolved stays resolved for the rest of that episode.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from streams.rules import SEVERITIES

HISTORY_KEEP = 100  # transitions kept in the alert itself: the first, and the latest 99
OPEN = ("firing", "acknowledged")


@dataclass(frozen=True)
class Policy:
    flap_s: float = 300.0  # a condition back within this long reopens its alert
    escalate_after_s: float = 900.0  # unacknowledged this long: one severity step up


class BadInput(ValueError):
    """An alert input that can't be applied; the message is the dead-letter reason."""


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def alert_id(rule: str, entity: str, episode: int) -> str:
    return hashlib.blake2b(f"{rule}|{entity}|{episode}".encode(), digest_size=8).hexdigest()


def input_key(rule: str, entity: str) -> bytes:
    return f"{rule}|{entity}".encode()


def command(kind: str, alert: dict[str, Any], by: str, note: str | None, at_ms: int) -> dict[str, Any]:
    """An ack or resolve of `alert`, as the API puts it on the alert-inputs topic."""
    return {"kind": kind, "id": alert["id"], "rule": alert["rule"], "entity": alert["entity"],
            "by": by, "note": note, "at": at_ms}


def _stronger(a: str, b: str) -> str:
    return max(a, b, key=SEVERITIES.index)


def _step_up(severity: str) -> str:
    return SEVERITIES[min(SEVERITIES.index(severity) + 1, len(SEVERITIES) - 1)]


def _record(alert: dict[str, Any], at_ms: int, action: str, by: str = "system",
            note: str | None = None) -> None:
    alert["seq"] += 1
    alert["transitions"] = alert.get("transitions", 0) + 1
    # `n` numbers every transition, so the API's archive keeps them all when the alert
    # itself keeps only the first and the latest.
    alert["history"].append({"n": alert["transitions"], "at": iso(at_ms), "action": action,
                             "status": alert["status"], "severity": alert["severity"],
                             "by": by, "note": note})
    if len(alert["history"]) > HISTORY_KEEP:
        del alert["history"][1]


def _new_alert(d: dict[str, Any]) -> dict[str, Any]:
    alert = {"id": alert_id(d["rule"], d["entity"], d["episode"]), "rule": d["rule"],
             "domain": d["rule"].partition(".")[0], "entity": d["entity"],
             "severity": d["severity"], "status": "firing", "summary": d["summary"],
             "value": d["value"], "threshold": d["threshold"], "started_at": iso(d["episode"]),
             "updated_at": iso(d["ts"]), "resolved_at": None, "count": 1, "acked_by": None,
             "acked_at": None, "resolved_by": None, "area": d["area"], "seq": 0, "history": [],
             **_extra(d)}
    _record(alert, d["ts"], "fired", note=d["summary"])
    return alert


def _extra(d: dict[str, Any]) -> dict[str, Any]:
    """What a detection adds to its alert beyond contract §4: the forecast behind an early
    warning (streams/early_warning.py), the latest report's."""
    return {"forecast": d["forecast"]} if isinstance(d.get("forecast"), dict) else {}


def _check(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("kind") not in ("detection", "ack", "resolve"):
        raise BadInput("alert input must be an object with kind detection, ack or resolve")
    need = (("rule", str), ("entity", str), ("status", str), ("severity", str), ("ts", int),
            ("episode", int), ("seq", int), ("summary", str), ("area", dict)) \
        if doc["kind"] == "detection" else (("id", str), ("by", str), ("at", int))
    for name, kind in need:
        if not isinstance(doc.get(name), kind) or isinstance(doc.get(name), bool):
            raise BadInput(f"alert input {doc['kind']}: {name} must be {kind.__name__}")
    if doc["kind"] == "detection" and (doc["severity"] not in SEVERITIES
                                       or doc["status"] not in ("firing", "resolved")):
        raise BadInput("detection: unknown severity or status")
    return doc


def apply(state: dict[str, Any] | None, doc: Any, policy: Policy) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fold one input into a (rule, entity) state; return the new state and the alert if
    it changed. Raises BadInput for an input that is not one."""
    doc = _check(doc)
    state = state or {"episode": None, "seq": 0, "manual": None, "alert": None}
    alert = state["alert"]
    if doc["kind"] != "detection":
        return state, _command(state, doc)
    if state["episode"] is not None and (doc["episode"], doc["seq"]) <= (state["episode"], state["seq"]):
        return state, None  # a replayed report, or one older than what was applied
    state["episode"], state["seq"] = doc["episode"], doc["seq"]
    if state["manual"] == doc["episode"]:
        return state, None  # a person resolved this episode; it stays resolved
    if doc["status"] == "resolved":
        if alert is None or alert["status"] not in OPEN:
            return state, None
        alert.update(status="resolved", resolved_at=iso(doc["ts"]), updated_at=iso(doc["ts"]), **_extra(doc))
        _record(alert, doc["ts"], "resolved", note="condition cleared")
        return state, alert
    if alert is not None and alert["status"] in OPEN:
        alert.update(count=alert["count"] + 1, updated_at=iso(doc["ts"]), value=doc["value"],
                     threshold=doc["threshold"], summary=doc["summary"], **_extra(doc))
        worse = _stronger(alert["severity"], doc["severity"])
        if worse != alert["severity"]:
            alert["severity"] = worse
            _record(alert, doc["ts"], "escalated", note=doc["summary"])
        elif (alert["status"] == "firing" and not alert.get("escalated")
              and doc["ts"] - ms(alert["started_at"]) >= policy.escalate_after_s * 1000):
            alert["severity"], alert["escalated"] = _step_up(alert["severity"]), True
            _record(alert, doc["ts"], "escalated",
                    note=f"unacknowledged for {policy.escalate_after_s / 60:g} min")
        else:
            alert["seq"] += 1
        return state, alert
    if (alert is not None and alert["resolved_by"] is None
            and doc["ts"] - ms(alert["resolved_at"]) <= policy.flap_s * 1000):
        alert.update(status="firing", resolved_at=None, count=alert["count"] + 1,
                     updated_at=iso(doc["ts"]), value=doc["value"], summary=doc["summary"], **_extra(doc),
                     severity=_stronger(alert["severity"], doc["severity"]))
        alert["flaps"] = alert.get("flaps", 0) + 1
        _record(alert, doc["ts"], "reopened", note="condition returned within the flap window")
        return state, alert
    state["alert"] = _new_alert(doc)
    return state, state["alert"]


def _command(state: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any] | None:
    alert = state["alert"]
    if alert is None or alert["id"] != doc["id"] or alert["status"] not in OPEN:
        return None  # the API checked, but the alert moved on meanwhile: nothing to do
    if doc["kind"] == "ack":
        if alert["status"] == "acknowledged":
            return None
        alert.update(status="acknowledged", acked_by=doc["by"], acked_at=iso(doc["at"]),
                     updated_at=iso(doc["at"]))
        _record(alert, doc["at"], "acknowledged", by=doc["by"], note=doc.get("note"))
        return alert
    alert.update(status="resolved", resolved_at=iso(doc["at"]), resolved_by=doc["by"],
                 updated_at=iso(doc["at"]))
    state["manual"] = state["episode"]
    _record(alert, doc["at"], "resolved", by=doc["by"], note=doc.get("note"))
    return alert


def ms(stamp: str) -> int:
    """Epoch ms of a stamp `iso` made."""
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)
