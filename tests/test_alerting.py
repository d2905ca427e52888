"""The alert lifecycle (contract §4), as a pure function of its inputs."""

from __future__ import annotations

import pytest

from streams.alerting import STATUSES, Alert, BadInput, Policy, Transition, alert_id, apply, command

POLICY = Policy(flap_s=300, escalate_after_s=900)
AREA = {"district": "市南区", "street": "八大关街道", "community": "c", "grid_cell": "g"}
MIN = 60_000


def detection(status: str = "firing", ts: int = 0, episode: int = 0, seq: int = 1,
              severity: str = "major", value: float = 1.1) -> dict:
    return {"kind": "detection", "rule": "grid.overload", "entity": "F-0001", "status": status,
            "severity": severity, "value": value, "threshold": 1.0, "ts": ts, "episode": episode,
            "seq": seq, "summary": "load 110% of rated", "area": AREA}


def feed(*inputs: dict, state=None):
    changes = []
    for doc in inputs:
        state, alert = apply(state, doc, POLICY)
        if alert is not None:
            changes.append(dict(alert))
    return state, changes


def test_a_detection_opens_one_alert_and_repeats_update_it() -> None:
    state, changes = feed(detection(), detection(ts=MIN, seq=2), detection(ts=2 * MIN, seq=3))
    alert = state["alert"]
    assert alert["id"] == alert_id("grid.overload", "F-0001", 0) == changes[0]["id"]
    assert {c["id"] for c in changes} == {alert["id"]}
    assert (alert["status"], alert["count"], alert["severity"]) == ("firing", 3, "major")
    assert alert["updated_at"].startswith("1970-01-01T00:02:00")
    assert alert["area"] == AREA and [h["action"] for h in alert["history"]] == ["fired"]


def test_replayed_detections_change_nothing() -> None:
    state, _ = feed(detection(), detection(ts=MIN, seq=2))
    before = dict(state["alert"])
    state, changes = feed(detection(), detection(ts=MIN, seq=2), state=state)
    assert changes == [] and state["alert"] == before


def test_the_alert_resolves_by_itself_when_the_condition_clears() -> None:
    state, changes = feed(detection(), detection("resolved", ts=5 * MIN, seq=2))
    assert changes[-1]["status"] == "resolved"
    assert changes[-1]["resolved_at"].startswith("1970-01-01T00:05:00")


def test_a_condition_back_within_the_flap_window_reopens_the_same_alert() -> None:
    state, _ = feed(detection(), detection("resolved", ts=MIN, seq=2))
    state, changes = feed(detection(ts=3 * MIN, episode=3 * MIN), state=state)
    assert changes[0]["id"] == alert_id("grid.overload", "F-0001", 0)
    assert (changes[0]["status"], changes[0]["count"], changes[0]["flaps"]) == ("firing", 2, 1)
    assert changes[0]["history"][-1]["action"] == "reopened"


def test_a_later_recurrence_opens_a_new_alert() -> None:
    state, _ = feed(detection(), detection("resolved", ts=MIN, seq=2))
    later = 60 * MIN
    state, changes = feed(detection(ts=later, episode=later), state=state)
    assert changes[0]["id"] == alert_id("grid.overload", "F-0001", later) != alert_id("grid.overload", "F-0001", 0)
    assert changes[0]["count"] == 1


def test_severity_rises_when_the_condition_worsens_and_when_nobody_acknowledges() -> None:
    state, changes = feed(detection(severity="minor"), detection(ts=MIN, seq=2, severity="major"))
    assert changes[-1]["severity"] == "major" and changes[-1]["history"][-1]["action"] == "escalated"
    state, changes = feed(detection(ts=15 * MIN, seq=3, severity="minor"), state=state)
    assert changes[-1]["severity"] == "critical"  # firing unacknowledged for 15 minutes
    state, changes = feed(detection(ts=16 * MIN, seq=4, severity="minor"), state=state)
    assert changes[-1]["severity"] == "critical"  # never back down


def test_an_acknowledged_alert_does_not_escalate_for_persisting() -> None:
    state, _ = feed(detection())
    state, _ = feed(command("ack", state["alert"], "duty officer 王", "on it", MIN), state=state)
    state, changes = feed(detection(ts=20 * MIN, seq=2), state=state)
    assert (changes[-1]["status"], changes[-1]["severity"]) == ("acknowledged", "major")


def test_ack_and_resolve_by_a_person_are_recorded_and_applied_once() -> None:
    state, _ = feed(detection())
    alert = dict(state["alert"])
    state, changes = feed(command("ack", alert, "王", "dispatching crew", MIN),
                          command("ack", alert, "王", "again", MIN + 1), state=state)
    assert len(changes) == 1 and changes[0]["acked_by"] == "王"
    state, changes = feed(command("resolve", alert, "李", "breaker reset", 2 * MIN), state=state)
    history = changes[0]["history"]
    assert [(h["action"], h["by"], h["note"]) for h in history] == [
        ("fired", "system", "load 110% of rated"), ("acknowledged", "王", "dispatching crew"),
        ("resolved", "李", "breaker reset")]
    # the condition still holds: the episode stays resolved, no new alert, no reopen
    state, changes = feed(detection(ts=3 * MIN, seq=2), state=state)
    assert changes == [] and state["alert"]["status"] == "resolved"


def test_a_command_for_an_alert_that_moved_on_does_nothing() -> None:
    state, _ = feed(detection())
    stale = {**state["alert"], "id": "0000000000000000"}
    state, changes = feed(command("ack", stale, "王", None, MIN), state=state)
    assert changes == []


def test_every_alert_is_the_document_its_type_describes() -> None:
    """The worker, the API and the notifier read alerts through one type (`Alert`): every
    state of the lifecycle has each field the type says it always has, and no other
    field than the type names."""
    state, changes = feed(detection(severity="minor"), detection(ts=MIN, seq=2), detection(ts=15 * MIN, seq=3),
                          detection("resolved", ts=16 * MIN, seq=4), detection(ts=17 * MIN, episode=17 * MIN, seq=5))
    state, acked = feed(command("ack", state["alert"], "王", None, 18 * MIN), state=state)
    state, resolved = feed(command("resolve", state["alert"], "李", "done", 19 * MIN), state=state)
    for alert in changes + acked + resolved:
        assert Alert.__required_keys__ <= alert.keys() <= Alert.__annotations__.keys()
        assert alert["status"] in STATUSES
        assert all(h.keys() == Transition.__annotations__.keys() for h in alert["history"])
    assert {"escalated", "flaps"} <= resolved[-1].keys()  # the fields an alert may lack, here


@pytest.mark.parametrize("doc", [None, [], {"kind": "explode"}, {**detection(), "ts": "soon"},
                                 {**detection(), "severity": "apocalyptic"}, {"kind": "ack", "id": 5}])
def test_bad_inputs_are_refused_with_a_reason(doc) -> None:
    with pytest.raises(BadInput):
        apply(None, doc, POLICY)
