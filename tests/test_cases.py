"""Cases, the pure step (streams/cases.py): dispatched to the grid cell, moved on by
people, escalated one level at a time by the clock carried in the inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cases import kpis
from streams.alerting import iso
from streams.cases import BadInput, CasesError, Limits, apply, case_id, command, opening

T0 = 1_795_219_200_000
AREA = {"district": "市南区", "street": "湛山街道", "community": "湛山社区", "grid_cell": "湛山社区第1网格"}
INCIDENT = {"id": "inc-1", "area": AREA, "severity": "critical"}
LIMITS = Limits(accept_s=600, handle_s=3600, table={(None, "street"): {"accept_s": 1800}})


def run(docs: list[dict], limits: Limits = LIMITS) -> tuple[dict, list[dict]]:
    state, told = None, []
    for d in docs:
        state, changed = apply(state, d, limits)
        told += [dict(c) for c in changed]
    return state, told


def tick(s: float) -> dict:
    return {"kind": "tick", "at": T0 + int(s * 1000)}


def act(kind: str, s: float, by: str = "网格员 李娜", note: str | None = None) -> dict:
    return command(kind, {"id": case_id("inc-1")}, by, note, T0 + int(s * 1000))


def test_an_incident_opens_one_case_for_its_grid_cell_with_its_clocks():
    state, told = run([opening("incident", INCIDENT, T0), opening("incident", INCIDENT, T0 + 5000)])  # the repeat opens nothing
    (case,) = state["cases"].values()
    assert len(told) == 1
    assert (case["id"], case["status"], case["level"], case["unit"]) == (
        case_id("inc-1"), "dispatched", "grid_cell", "湛山社区第1网格网格员")
    assert (case["accept_by"], case["handle_by"]) == (iso(T0 + 600_000), iso(T0 + 3_600_000))
    assert case["history"][0] | {"at": None} == {"n": 1, "at": None, "action": "dispatched", "status": "dispatched",
                                                 "by": "system", "level": "grid_cell",
                                                 "unit": "湛山社区第1网格网格员", "note": "incident inc-1"}


def test_a_case_not_accepted_in_time_climbs_one_level_at_a_time_until_accepted():
    state, _ = run([opening("incident", INCIDENT, T0), tick(599), tick(601), tick(700), tick(1202), tick(1300),
                    act("accept", 1400, by="街道值班员"), tick(99_999)])
    (case,) = state["cases"].values()
    assert [(h["action"], h["level"], h["by"]) for h in case["history"]] == [
        ("dispatched", "grid_cell", "system"), ("escalated", "community", "system"),
        ("escalated", "street", "system"), ("accepted", "street", "街道值班员"),
        ("escalated", "district", "system")]  # accepted, then not handled in time at the street
    assert case["escalations"] == 3 and case["unit"] == "市南区区指挥中心"
    assert case["history"][1]["note"] == "not accepted in time by 湛山社区第1网格网格员"
    # At the street the time to accept is the street's own (1800 s), from when it arrived.
    assert case["history"][2]["at"] == iso(T0 + 1_202_000)


def test_the_whole_workflow_records_who_and_when():
    state, _ = run([opening("incident", INCIDENT, T0), act("accept", 60), act("feedback", 900, note="抢修完成"),
                    act("verify", 1000, by="社区主任"), act("close", 1100, by="社区主任")])
    (case,) = state["cases"].values()
    assert [(h["action"], h["status"], h["by"]) for h in case["history"]] == [
        ("dispatched", "dispatched", "system"), ("accepted", "accepted", "网格员 李娜"),
        ("handled", "handled", "网格员 李娜"), ("verified", "verified", "社区主任"), ("closed", "closed", "社区主任")]
    assert case["on_time"] is True and case["closed_at"] == iso(T0 + 1_100_000)
    assert case["history"][2]["note"] == "抢修完成"


def test_commands_out_of_turn_change_nothing():
    _, told = run([opening("incident", INCIDENT, T0), act("verify", 10), act("feedback", 11), act("accept", 12),
                   act("accept", 13)])
    assert [c["status"] for c in told] == ["dispatched", "accepted"]


def test_a_returned_case_goes_back_up_to_the_level_that_dispatched_it():
    state, _ = run([opening("incident", INCIDENT, T0), act("return", 30, note="不是本网格的设备")])
    (case,) = state["cases"].values()
    assert (case["status"], case["level"], case["unit"]) == ("returned", "community", "湛山社区社区居委会")
    assert case["accept_by"] == iso(T0 + 630_000)


def test_a_replay_of_the_same_inputs_repeats_the_same_cases():
    docs = [opening("incident", INCIDENT, T0), tick(601), act("accept", 700), tick(5000)]
    assert run(docs) == run(docs)


def test_limits_per_severity_and_level_most_specific_first(tmp_path: Path):
    f = tmp_path / "cases.yaml"
    f.write_text("limits:\n  - {level: grid_cell, accept_s: 300}\n  - {severity: critical, accept_s: 120, handle_s: 900}\n"
                 "  - {severity: critical, level: street, accept_s: 60}\nunits:\n  湛山社区: 湛山社区网格工作站\n"
                 "open_for: [gate.fever]\n")
    limits = Limits.from_file(f, 1800, 86400)
    assert limits.of("critical", "grid_cell") == (300, 900)
    assert limits.of("critical", "street") == (60, 900)
    assert limits.of("minor", "community") == (1800, 86400)
    assert limits.unit(AREA, "community") == "湛山社区网格工作站"
    assert limits.open_for == {"gate.fever"}


def test_an_alert_of_a_rule_configured_to_open_cases_opens_its_own():
    alert = {"id": "alert-9", "area": AREA, "severity": "major", "rule": "gate.fever"}
    state, _ = run([opening("alert", alert, T0), opening("alert", alert, T0 + 1)])
    (case,) = state["cases"].values()
    assert (case["id"], case["alert"], case["incident"]) == (case_id("alert-9"), "alert-9", None)
    assert case["history"][0]["note"] == "alert alert-9"


@pytest.mark.parametrize("text, message", [
    ("limits: [{level: town}]", "limits[0].level: 'town' is not one of"),
    ("limits: [{accept_s: -1}]", "limits[0].accept_s: expected a positive number"),
    ("rules: {}", "expected a mapping with 'limits', 'units' and/or 'open_for'"),
    ("open_for: [gate.nope]", "open_for: expected a list of rules of the catalogue"),
    ("limits: [", "not valid YAML"),
])
def test_a_bad_cases_file_is_refused_with_one_line(tmp_path: Path, text: str, message: str):
    f = tmp_path / "cases.yaml"
    f.write_text(text)
    with pytest.raises(CasesError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Limits.from_file(f, 1800, 86400)


@pytest.mark.parametrize("doc", [None, {"kind": "open"}, {"kind": "tick"}, {"kind": "accept", "id": "x", "at": 1},
                                 {"kind": "open", "id": "c", "area": {}, "severity": "major", "at": 1}])
def test_bad_input_is_refused_with_a_reason(doc):
    with pytest.raises(BadInput):
        apply(None, doc, LIMITS)


def test_kpis_count_closure_on_time_and_mean_times_from_a_timeline():
    other = {**INCIDENT, "id": "inc-2"}
    third = {**INCIDENT, "id": "inc-3"}
    state, _ = run([opening("incident", INCIDENT, T0), opening("incident", other, T0 + 100_000), opening("incident", third, T0),
                    act("accept", 60), act("close", 600),  # on time: 60 s to accept, 600 s to close
                    command("accept", {"id": case_id("inc-2")}, "x", None, T0 + 400_000), tick(1000),
                    command("close", {"id": case_id("inc-2")}, "x", None, T0 + 4_000_000)])
    # inc-2: accepted after 300 s, then not handled within 3600 s → escalated, closed late.
    # inc-3: never accepted, escalated at the tick of 1000 s; overdue at the community from 1600 s.
    assert kpis(state["cases"].values(), T0 + 1_500_000)["overdue"] == 0
    assert kpis(state["cases"].values(), T0 + 1_700_000) == {
        "opened": 3, "closed": 2, "closure_rate": 2 / 3, "on_time_rate": 0.5, "mean_accept_s": (60 + 300) / 2,
        "mean_close_s": (600 + 3900) / 2, "overdue": 1}
    assert kpis([], T0)["closure_rate"] is None
