"""Incidents, the pure step (streams/incidents.py): alerts that share a cause become one
incident whatever order they arrive in, and a replay repeats the same incidents."""

from __future__ import annotations

import copy
import itertools

import pytest

from streams.alerting import iso
from streams.incidents import AREA, BadInput, Grouping, apply, incident_id, member

T0 = 1_763_683_200_000
CELL = {"district": "市南区", "street": "八大关街道", "community": "八大关社区", "grid_cell": "八大关社区-03"}


def alert(rule: str, entity: str, started_s: float, *, status: str = "firing", seq: int = 1,
          severity: str = "major", cell: dict[str, str] = CELL, resolved_s: float | None = None) -> dict:
    started = T0 + int(started_s * 1000)
    resolved = None if resolved_s is None else T0 + int(resolved_s * 1000)
    return {"id": f"{rule}|{entity}|{started}", "rule": rule, "entity": entity, "severity": severity,
            "status": status, "seq": seq, "area": cell, "started_at": iso(started),
            "updated_at": iso(resolved or started), "resolved_at": iso(resolved) if resolved else None}


def fold(docs: list[tuple[dict, str | None]], grouping: Grouping = Grouping()) -> dict[str, dict]:
    state, latest = None, {}
    for a, feeder in docs:
        state, changed = apply(state, member(a, feeder), grouping)
        latest.update({i["id"]: i for i in changed})
    return latest


def shape(incidents: dict[str, dict]) -> dict[str, tuple]:
    return {i: (d["kind"], d["cause"], tuple(d["children"]), d["status"], d["severity"], d["opened_at"])
            for i, d in incidents.items()}


OUTAGE = alert("grid.outage", "F-0001", 30, severity="critical")
GATES = [alert("gate.offline", f"G-000{n}", 10 + n) for n in range(1, 4)]


def test_a_feeder_outage_is_one_incident_with_its_devices_in_any_arrival_order():
    docs = [(OUTAGE, None)] + [(g, "F-0001") for g in GATES]
    seen = {frozenset(shape(fold(list(order))).items()) for order in itertools.permutations(docs)}
    assert len(seen) == 1
    (iid, (kind, cause, children, status, severity, opened)), = dict(seen.pop()).items()
    assert iid == incident_id("feeder_outage", OUTAGE["id"])
    assert (kind, cause, status, severity) == ("feeder_outage", OUTAGE["id"], "open", "critical")
    assert children == tuple(g["id"] for g in GATES)
    assert opened == GATES[0]["started_at"]  # the incident began when its first device fell


def test_an_effect_arriving_well_before_its_cause_is_attached_within_the_hold_back():
    late_cause = alert("grid.outage", "F-0001", 50, severity="critical")
    incidents = fold([(GATES[0], "F-0001"), (late_cause, None)], Grouping(hold_s=60))
    assert [i["children"] for i in incidents.values()] == [[GATES[0]["id"]]]


def test_devices_that_fell_long_before_or_after_the_feeder_are_not_its_children():
    before = alert("gate.offline", "G-0009", -600)
    after = alert("gate.offline", "G-0008", 4000)
    cause = alert("grid.outage", "F-0001", 30, status="resolved", seq=2, resolved_s=300)
    incidents = fold([(before, "F-0001"), (cause, None), (after, "F-0001")])
    assert [i["children"] for i in incidents.values()] == [[]]


def test_other_feeders_devices_stay_out():
    incidents = fold([(OUTAGE, None), (GATES[0], "F-0002"), (GATES[1], None)])
    assert [i["children"] for i in incidents.values()] == [[]]


def test_many_devices_of_one_grid_cell_without_a_cause_become_one_area_incident_after_the_hold_back():
    grouping = Grouping(hold_s=60, area_min=3)
    held = fold([(g, None) for g in GATES], grouping)
    assert held == {}  # still held back: a cause may come
    later = alert("gate.offline", "G-0100", 200, cell={**CELL, "grid_cell": "其他-01"})
    incidents = fold([(g, None) for g in GATES] + [(later, None)], grouping)
    (inc,) = incidents.values()
    assert (inc["kind"], inc["cause"], inc["children"]) == (AREA, None, [g["id"] for g in GATES])
    assert inc["area"] == CELL


def test_two_devices_are_not_an_area_incident():
    later = alert("gate.offline", "G-0100", 500, cell={**CELL, "grid_cell": "其他-01"})
    assert fold([(GATES[0], None), (GATES[1], None), (later, None)]) == {}


def test_an_incident_closes_when_its_cause_and_children_are_resolved():
    resolved = [(alert("grid.outage", "F-0001", 30, status="resolved", seq=2, severity="critical",
                       resolved_s=900), None)]
    resolved += [(alert("gate.offline", g["entity"], 10 + n, status="resolved", seq=2, resolved_s=950 + n), "F-0001")
                 for n, g in enumerate(GATES, 1)]
    incidents = fold([(OUTAGE, None)] + [(g, "F-0001") for g in GATES] + resolved)
    (inc,) = incidents.values()
    assert inc["status"] == "closed" and inc["closed_at"] == iso(T0 + 953_000)


def test_a_replay_changes_no_incident():
    docs = [(OUTAGE, None)] + [(g, "F-0001") for g in GATES]
    state, first = None, []
    for a, feeder in docs:
        state, changed = apply(state, member(a, feeder), Grouping())
        first += changed
    for a, feeder in docs:  # read again after a crash
        state, changed = apply(state, member(a, feeder), Grouping())
        assert changed == []
    assert len({i["id"] for i in first}) == 1


def test_a_feeders_second_alert_joins_its_open_incident():
    silent = alert("grid.offline", "F-0001", 40)
    incidents = fold([(OUTAGE, None), (silent, None), (GATES[0], "F-0001")])
    (inc,) = incidents.values()
    assert inc["cause"] == OUTAGE["id"] and inc["children"] == [GATES[0]["id"], silent["id"]]


@pytest.mark.parametrize("doc", [None, [], {"id": 1}, {**member(OUTAGE, None), "rule": "grid.overload"}])
def test_bad_input_is_refused_with_a_reason(doc):
    with pytest.raises(BadInput):
        apply(None, doc, Grouping())


def test_a_state_stored_before_it_was_indexed_groups_on_alike():
    """States stored by an earlier version hold no index: one is built as it loads, and
    grouping goes on as if it had always been there, wherever the stream was cut."""
    effects = [alert("gate.offline", f"G-{n:04d}", 10 + n) for n in range(8)]
    outage = alert("grid.outage", "F-0001", 12, severity="critical")
    docs = ([(e, "F-0001" if n % 2 else None) for n, e in enumerate(effects[:5])] + [(outage, None)]
            + [(e, "F-0001" if n % 2 else None) for n, e in enumerate(effects[5:], 5)]
            + [(alert("gate.offline", "G-0000", 10, status="resolved", seq=2, resolved_s=200), None)])
    for cut in range(len(docs)):
        state, before, after = None, [], []
        for a, feeder in docs[:cut]:
            state, _ = apply(state, member(a, feeder), Grouping(hold_s=5))
        stored = None if state is None else copy.deepcopy({k: state[k] for k in ("t", "alerts", "incidents")})
        for a, feeder in docs[cut:]:
            state, changed = apply(state, member(a, feeder), Grouping(hold_s=5))
            before += changed
            stored, changed = apply(stored, member(a, feeder), Grouping(hold_s=5))
            after += changed
        assert after == before and before, cut
