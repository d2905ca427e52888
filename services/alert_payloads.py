"""Alertmanager's formats, built from citybrain alerts (contract §4 → §6): pure functions.

Labels are an alert's identity in Alertmanager (its fingerprint is a hash of them), so they
hold what names the alert; what changes while it is open (status, acknowledgement, value,
count) goes in annotations. Severity is a label, as the contract asks, and can escalate
(major → critical): the label set a receiver was told of before is then resolved beside the
new one, as Prometheus does when a label changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from streams.alerting import STATUSES, Alert
from streams.events import parse_ts
from streams.registry import LEVELS, UNASSIGNED

Labels = dict[str, str]


class Notice(Alert, total=False):
    """What receivers are told of: an alert (streams/alerting.py) without its history, its
    timestamps in RFC 3339 UTC; or an incident or a case told as one, which links to
    itself and may carry labels of its own."""

    link: str  # the API path receivers are sent to; an alert's own by default
    labels: Labels


# What names an alert (its labels): non-empty text.
_NAMES = ("id", "rule", "severity", "domain", "entity")
_STAMPS = ("started_at", "updated_at", "resolved_at", "acked_at")
# Every field an alert always has, in the worker's order; the history is left out.
_KEPT = tuple(name for name in Alert.__annotations__ if name in Alert.__required_keys__)
# What Alertmanager puts in a webhook's endsAt while an alert fires; receivers test for it.
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_alert(raw: bytes) -> Notice:
    """A value of the alerts topic, checked, with UTC timestamps and every area level set.

    Raises ValueError for a value no receiver could be told of. The history and the other
    fields an alert may lack are dropped: nothing here needs them. A field an alert should
    have and this one lacks is None; `seq` too (an alert not written by our worker), and
    such an alert is taken as newer than any state before it."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("alert is not a JSON object")
    for name in _NAMES:
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise ValueError(f"alert {doc.get('id')!r}: {name} must be a non-empty string")
    if doc.get("status") not in STATUSES:
        raise ValueError(f"alert {doc['id']!r}: status {doc.get('status')!r} is not one of {', '.join(STATUSES)}")
    if doc.get("seq") is not None and type(doc["seq"]) is not int:
        raise ValueError(f"alert {doc['id']!r}: seq must be an integer")
    area = doc.get("area") if isinstance(doc.get("area"), dict) else {}
    alert: Notice = {k: doc.get(k) for k in _KEPT}  # type: ignore[assignment]
    alert["area"] = {level: str(area.get(level) or UNASSIGNED) for level in LEVELS}
    for name in _STAMPS:
        v = doc.get(name)
        alert[name] = None if v is None else rfc3339(parse_ts(v))
    alert["started_at"] = alert["started_at"] or alert["updated_at"]
    if alert["started_at"] is None:
        raise ValueError(f"alert {doc['id']!r}: no started_at")
    # A reopened alert may still carry its last resolution.
    alert["resolved_at"] = (alert["resolved_at"] or alert["updated_at"] or alert["started_at"]
                            if alert["status"] == "resolved" else None)
    return alert


_INCIDENT_SUMMARY = {"feeder_outage": "feeder {feeder} outage: {n} devices offline",
                     "feeder_offline": "feeder {feeder} silent: {n} devices offline",
                     "area_outage": "{n} devices offline in {cell}"}


def parse_incident(raw: bytes) -> tuple[Notice, list[str]]:
    """A value of the incidents topic (contract §8) as integrations are told of it, an alert
    of rule `incident.<kind>` and domain `incident` (open is firing, closed is resolved),
    and the ids of the alerts it groups, which are told through it and not by themselves.
    Raises ValueError for a value that is not an incident."""
    doc = orjson.loads(raw)
    try:
        members = ([doc["cause"]] if doc["cause"] else []) + list(doc["children"])
        area = {level: str(doc["area"].get(level) or UNASSIGNED) for level in LEVELS}
        n = len(doc["children"])
        summary = _INCIDENT_SUMMARY[doc["kind"]].format(feeder=doc.get("feeder"), n=n, cell=area["grid_cell"])
        alert: Notice = {"id": doc["id"], "rule": f"incident.{doc['kind']}", "domain": "incident",
                 "entity": doc.get("feeder") or area["grid_cell"], "severity": doc["severity"],
                 "status": "firing" if doc["status"] == "open" else "resolved", "summary": summary,
                 "value": None, "threshold": None, "count": len(members), "acked_by": None, "acked_at": None,
                 "resolved_by": None,
                 "seq": doc["seq"], "area": area, "link": f"/api/v1/incidents/{quote(doc['id'], safe='')}",
                 "started_at": rfc3339(parse_ts(doc["opened_at"])), "updated_at": rfc3339(parse_ts(doc["updated_at"])),
                 "resolved_at": rfc3339(parse_ts(doc["closed_at"])) if doc["closed_at"] else None}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"incident {doc.get('id') if isinstance(doc, dict) else None!r}: {exc!r}") from None
    if not all(isinstance(m, str) for m in members) or type(doc["seq"]) is not int:
        raise ValueError(f"incident {doc['id']!r}: children must be alert ids and seq an integer")
    return alert, members


def parse_case(raw: bytes) -> Notice:
    """A value of the cases topic (contract §8) as integrations are told of it: an alert of
    rule `case`, open until the case closes, with labels `level` and `unit` saying where it
    sits now. An escalation changes them, so receivers hear of it (the old label set
    resolved beside the new one), and Alertmanager routes on them to that level's unit.
    Raises ValueError for a value that is not a case."""
    doc = orjson.loads(raw)
    try:
        area = {level: str(doc["area"].get(level) or UNASSIGNED) for level in LEVELS}
        escalated = f", escalated {doc['escalations']}×" if doc["escalations"] else ""
        alert: Notice = {"id": doc["id"], "rule": "case", "domain": "case", "entity": doc["incident"] or doc["alert"],
                 "severity": doc["severity"], "status": "resolved" if doc["status"] == "closed" else "firing",
                 "summary": f"case {doc['status']} at {doc['unit']}{escalated}", "value": None, "threshold": None,
                 "count": doc["escalations"], "acked_by": None, "acked_at": None, "resolved_by": None, "seq": doc["seq"],
                 "area": area, "labels": {"level": str(doc["level"]), "unit": str(doc["unit"])},
                 "link": f"/api/v1/cases/{quote(doc['id'], safe='')}",
                 "started_at": rfc3339(parse_ts(doc["opened_at"])), "updated_at": rfc3339(parse_ts(doc["updated_at"])),
                 "resolved_at": rfc3339(parse_ts(doc["closed_at"])) if doc["closed_at"] else None}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"case {doc.get('id') if isinstance(doc, dict) else None!r}: {exc!r}") from None
    if type(doc["seq"]) is not int or not isinstance(alert["entity"], str):
        raise ValueError(f"case {doc['id']!r}: seq must be an integer and incident or alert an id")
    return alert


def labels(alert: Notice) -> Labels:
    return {"alertname": alert["rule"], "severity": alert["severity"], "domain": alert["domain"],
            "entity": alert["entity"], **alert["area"], **alert.get("labels", {}), "alert_id": alert["id"]}


def annotations(alert: Notice) -> dict[str, str]:
    """Annotation values are strings in Alertmanager; absent fields are left out."""
    out = {"summary": alert.get("summary") or alert["rule"], "citybrain_status": alert["status"]}
    for name in ("value", "threshold", "count", "acked_by", "resolved_by"):
        if alert.get(name) is not None:
            out[name] = str(alert[name])
    return out


def fingerprint(ls: Labels) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted names and values,
    each followed by 0xff), so an alert has the same one in webhooks and in Alertmanager."""
    h = 0xCBF29CE484222325
    for name in sorted(ls):
        for byte in name.encode() + b"\xff" + ls[name].encode() + b"\xff":
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def group_labels(alert: Notice) -> Labels:
    """Webhook notifications are grouped by rule and district: one message per kind of
    trouble per district, as a district's duty desk reads them."""
    return {"alertname": alert["rule"], "district": alert["area"]["district"]}


def group_key(group: Labels) -> str:
    """Alertmanager's groupKey of a group under its root route: `{}:{name="value", ...}`."""
    inner = ", ".join(f"{k}={orjson.dumps(group[k]).decode()}" for k in sorted(group))
    return "{}:{" + inner + "}"


def _alert(alert: Notice, ls: Labels, external_url: str) -> dict[str, Any]:
    return {"labels": ls, "annotations": annotations(alert), "startsAt": alert["started_at"],
            "generatorURL": external_url.rstrip('/') + (alert.get("link") or f"/api/v1/alerts/{quote(alert['id'], safe='')}")}


def alertmanager_alert(alert: Notice, ls: Labels, ends_at: str, external_url: str) -> dict[str, Any]:
    """One alert as Alertmanager's `POST /api/v2/alerts` takes it. `ends_at` is never before
    `startsAt`: Alertmanager refuses such an alert (event time may run ahead of the clock)."""
    return {**_alert(alert, ls, external_url), "endsAt": max(ends_at, alert["started_at"])}


def alertmanager_push(alert: Notice, pushed_labels: Labels | None, now: str, ends_ahead: str,
                      external_url: str, *, as_open: bool = False) -> list[dict[str, Any]]:
    """What tells Alertmanager an alert's state: open until `ends_ahead` (re-sent before
    then), or ended at its resolution (unless `as_open`: it resolved before Alertmanager
    got it open); and the label set it was last sent under, ended `now`, when a label has
    changed since."""
    ls = labels(alert)
    ends = ends_ahead if as_open else alert["resolved_at"] or ends_ahead
    old = [] if pushed_labels in (None, ls) else [alertmanager_alert(alert, pushed_labels, now, external_url)]
    return old + [alertmanager_alert(alert, ls, ends, external_url)]


def webhook_alert(alert: Notice, ls: Labels, ends_at: str | None, external_url: str) -> dict[str, Any]:
    """One entry of a webhook's `alerts`; `ends_at` None while it fires."""
    return {"status": "firing" if ends_at is None else "resolved", **_alert(alert, ls, external_url),
            "endsAt": ends_at or ZERO_TIME, "fingerprint": fingerprint(ls)}


@dataclass(frozen=True)
class Member:
    """An alert of a webhook group, with what the receivers were last told of it."""

    alert: Notice
    told_status: str | None
    told_labels: Labels | None


def telling(m: Member) -> str:
    """The status a group's next notification tells of a member: its own, except that an
    alert that resolved before any notification told it fired is told as firing first (its
    resolution goes with the group's next notification). Alertmanager would leave such an
    alert out; a fever at a gate that cleared within one group wait is still news."""
    if m.alert["status"] == "resolved" and m.told_status is None:
        return "firing"
    return m.alert["status"]


def group_entries(members: list[Member], external_url: str) -> list[dict[str, Any]] | None:
    """The `alerts` of a group's next notification, or None when nothing changed that
    receivers must hear of.

    A notification is due when an alert joins, is acknowledged, resolves or changes labels;
    a new count or value alone rides along with the next one. Every alert of the group is in
    it, as in Alertmanager, except those whose resolution was told already. Acknowledged is
    still firing (annotation `citybrain_status` tells)."""
    entries: list[dict[str, Any]] = []
    changed = False
    for m in members:
        a, ls, status = m.alert, labels(m.alert), telling(m)
        if status == m.told_status == "resolved":
            continue
        changed |= (status, ls) != (m.told_status, m.told_labels)
        if m.told_labels is not None and m.told_labels != ls and m.told_status != "resolved":
            entries.append(webhook_alert(a, m.told_labels, a["updated_at"] or a["started_at"], external_url))
        entries.append(webhook_alert(a, ls, a["resolved_at"] if status == "resolved" else None, external_url))
    return entries if changed else None


def webhook_payload(receiver: str, group: Labels, entries: list[dict[str, Any]],
                    external_url: str) -> dict[str, Any]:
    """An Alertmanager webhook v4 notification of one group."""
    def common(field: str) -> dict[str, str]:
        first, *rest = (e[field] for e in entries)
        return {k: v for k, v in first.items() if all(other.get(k) == v for other in rest)}

    return {"version": "4", "receiver": receiver,
            "status": "firing" if any(e["status"] == "firing" for e in entries) else "resolved",
            "groupKey": group_key(group), "truncatedAlerts": 0, "groupLabels": group,
            "commonLabels": common("labels"), "commonAnnotations": common("annotations"),
            "externalURL": external_url, "alerts": entries}
