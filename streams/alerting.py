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

# No `from __future__ import annotations` here: TypedDict reads NotRequired only from
# evaluated annotations, and readers (services/alert_payloads.py) rely on its key sets.
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NotRequired, TypedDict

from streams.rules import SEVERITIES

HISTORY_KEEP = 100  # transitions kept in the alert itself: the first, and the latest 99
STATUSES = ("firing", "acknowledged", "resolved")
OPEN = STATUSES[:2]


class Transition(TypedDict):
    """One entry of an alert's history."""

    n: int  # numbers every transition, so the API's archive keeps them all (HISTORY_KEEP)
    at: str
    action: str  # fired, escalated, acknowledged, resolved, reopened
    status: str
    severity: str
    by: str  # "system", or who acted (the token's name)
    note: str | None


class Alert(TypedDict):
    """An alert as the worker publishes it on the alerts topic, keyed by its id: the one
    description of the document that the worker writes, the API serves and the notifier
    tells. The fields down to `area` are contract §4's; the rest are ours."""

    id: str
    rule: str
    domain: str
    entity: str
    severity: str  # one of streams.rules.SEVERITIES
    status: str  # one of STATUSES
    summary: str
    value: float | None
    threshold: float | None
    started_at: str  # ISO 8601 UTC, as `iso` writes it
    updated_at: str
    resolved_at: str | None
    count: int  # detections while open, reopenings included
    acked_by: str | None
    area: dict[str, str]  # streams.registry.LEVELS → the area's name at that level
    acked_at: str | None
    resolved_by: str | None
    seq: int  # one more with every change: readers keep the highest they have seen
    # The first transition and the latest; lists, live feeds and notifications leave it out.
    history: NotRequired[list[Transition]]
    transitions: NotRequired[int]  # how many there have been; the worker's alerts always say
    escalated: NotRequired[bool]  # it rose a step for being unacknowledged (once per alert)
    flaps: NotRequired[int]  # how often it reopened within the flap window
    # An early warning's forecast (streams/early_warning.py): when the limit is expected
    # to be passed, the forecast at its worst with its interval, and the rule it warns of.
    forecast: NotRequired[dict[str, Any]]


class Command(TypedDict):
    """A person's ack or resolve on the alert-inputs topic, from any API replica."""

    kind: Literal["ack", "resolve"]
    id: str
    rule: str
    entity: str
    by: str
    note: str | None
    at: int  # epoch ms


class AlertState(TypedDict):
    """What the alert agent keeps per (rule, entity), in its table."""

    episode: int | None  # the (episode, seq) of the last detection applied
    seq: int
    manual: int | None  # the episode a person resolved by hand
    alert: Alert | None
    o: NotRequired[int]  # the input offset applied last (streams/alert_step.py)


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


def command(kind: Literal["ack", "resolve"], alert: Alert, by: str, note: str | None, at_ms: int) -> Command:
    """An ack or resolve of `alert`, as the API puts it on the alert-inputs topic."""
    return {"kind": kind, "id": alert["id"], "rule": alert["rule"], "entity": alert["entity"],
            "by": by, "note": note, "at": at_ms}


def _stronger(a: str, b: str) -> str:
    return max(a, b, key=SEVERITIES.index)


def _step_up(severity: str) -> str:
    return SEVERITIES[min(SEVERITIES.index(severity) + 1, len(SEVERITIES) - 1)]


def _record(alert: Alert, at_ms: int, action: str, by: str = "system",
            note: str | None = None) -> None:
    alert["seq"] += 1
    alert["transitions"] += 1
    alert["history"].append({"n": alert["transitions"], "at": iso(at_ms), "action": action,
                             "status": alert["status"], "severity": alert["severity"],
                             "by": by, "note": note})
    if len(alert["history"]) > HISTORY_KEEP:
        del alert["history"][1]


def _new_alert(d: dict[str, Any]) -> Alert:
    alert: Alert = {
        "id": alert_id(d["rule"], d["entity"], d["episode"]), "rule": d["rule"],
        "domain": d["rule"].partition(".")[0], "entity": d["entity"], "severity": d["severity"],
        "status": "firing", "summary": d["summary"], "value": d["value"], "threshold": d["threshold"],
        "started_at": iso(d["episode"]), "updated_at": iso(d["ts"]), "resolved_at": None, "count": 1,
        "acked_by": None, "acked_at": None, "resolved_by": None, "area": d["area"], "seq": 0,
        "history": [], "transitions": 0, **_extra(d)}
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


def apply(state: AlertState | None, doc: Any, policy: Policy) -> tuple[AlertState, Alert | None]:
    """Fold one input into a (rule, entity) state; return the new state and the alert if
    it changed. Raises BadInput for an input that is not one."""
    doc = _check(doc)
    state = state or AlertState(episode=None, seq=0, manual=None, alert=None)
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


def _command(state: AlertState, doc: dict[str, Any]) -> Alert | None:
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
