"""The alert path's step, free of Faust: a partition's alert inputs in, states, changed
alerts and dead letters out — what the alert agent sends and stores."""

from __future__ import annotations

from typing import Any

import orjson

from streams.alert_step import step
from streams.alerting import Policy, alert_id, command, input_key
from streams.processor import Record

TOPIC = "t.alert-inputs"
POLICY = Policy(flap_s=300, escalate_after_s=900)
AREA = {"district": "市南区", "street": "八大关街道", "community": "c", "grid_cell": "g"}
KEY = input_key("grid.overload", "F-0001")


def detection(seq: int, status: str = "firing", entity: str = "F-0001") -> bytes:
    return orjson.dumps({"kind": "detection", "rule": "grid.overload", "entity": entity, "status": status,
                         "severity": "major", "value": 1.1, "threshold": 1.0, "ts": seq * 60_000,
                         "episode": 0, "seq": seq, "summary": "load 110% of rated", "area": AREA})


def records(*values: tuple[bytes, bytes], first: int = 0) -> list[Record]:
    return [Record(3, first + i, key, value) for i, (key, value) in enumerate(values)]


def test_inputs_fold_into_one_state_per_key_and_the_alert_as_it_now_is() -> None:
    out = step(records((KEY, detection(1)), (KEY, detection(2))), TOPIC, {}.get, POLICY)
    aid = alert_id("grid.overload", "F-0001", 0)
    assert list(out.alerts) == [aid] and out.alerts[aid]["count"] == 2
    assert list(out.states) == [KEY.decode()] and out.states[KEY.decode()]["o"] == 1
    assert out.deadletters == []


def test_a_replay_after_a_crash_skips_what_the_stored_state_covers() -> None:
    table: dict[str, Any] = {}
    first = step(records((KEY, detection(1)), (KEY, detection(2))), TOPIC, table.get, POLICY)
    table.update(first.states)
    # the same records again, and one new one: only the new one counts
    again = step(records((KEY, detection(1)), (KEY, detection(2)), (KEY, detection(3))), TOPIC,
                 table.get, POLICY)
    assert [a["count"] for a in again.alerts.values()] == [3]
    assert again.states[KEY.decode()]["o"] == 2


def test_bad_inputs_become_dead_letters_with_a_reason_and_change_nothing() -> None:
    out = step(records((KEY, b"{not json"), (KEY, b'{"kind": "bogus"}'), (KEY, detection(1)), first=10),
               TOPIC, {}.get, POLICY)
    letters = [orjson.loads(doc) for _, doc in out.deadletters]
    assert [d["reason"].split(":")[0] for d in letters] == ["not JSON", "alert input"]
    assert [(d["topic"], d["partition"], d["offset"], d["raw"]) for d in letters] == [
        (TOPIC, 3, 10, "{not json"), (TOPIC, 3, 11, '{"kind": "bogus"}')]
    assert [k for k, _ in out.deadletters] == [KEY, KEY]
    assert len(out.alerts) == 1 and out.states[KEY.decode()]["o"] == 12


def test_a_command_acknowledges_the_alert_it_names() -> None:
    table: dict[str, Any] = {}
    opened = step(records((KEY, detection(1))), TOPIC, table.get, POLICY)
    table.update(opened.states)
    alert = next(iter(opened.alerts.values()))
    ack = orjson.dumps(command("ack", alert, "值班长", "on it", 90_000))
    out = step(records((KEY, ack), first=1), TOPIC, table.get, POLICY)
    assert out.alerts[alert["id"]]["status"] == "acknowledged"
    assert out.alerts[alert["id"]]["acked_by"] == "值班长"


def test_each_key_has_its_own_state_and_a_keyless_bad_input_is_dead_lettered() -> None:
    other = input_key("grid.overload", "F-0002")
    out = step(records((KEY, detection(1)), (other, detection(1, entity="F-0002")), (None, b"[]")),
               TOPIC, {}.get, POLICY)
    assert list(out.states) == [KEY.decode(), other.decode()]
    assert len(out.alerts) == 2 and [k for k, _ in out.deadletters] == [None]
