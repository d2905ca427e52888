"""Cases on the real stack: a feeder outage's incident opens a case at its grid cell; not
accepted in time it climbs to the community, then the street (its worker SIGKILLed in
between), where an operator accepts and closes it; every step is in its history with who
and when, and a real webhook receiver hears of each level once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, expect

from services.config import Settings
from streams.alerting import ms
from streams.cases import case_id
from tests.conftest import Api, Proc, child_env, event_records, produce, wait_for
from tests.test_alerts import Live
from tests.test_dashboard import sign_in
from tests.test_incidents_stack import AREA, FEEDER, POWERED, WITNESSES, feeder_events, gate_events
from tests.test_notifier import FAST, Receiver

LIMITS = """
limits:
  - {level: grid_cell, accept_s: 3}
  - {level: community, accept_s: 3}
  - {level: street, accept_s: 3600}
"""


def act(api: Api, cid: str, kind: str, token: str = "tz", **body: Any) -> httpx.Response:
    return httpx.post(f"{api.url}/api/v1/cases/{cid}/{kind}", json={"by": "街道值班员 张强", **body},
                      headers={"Authorization": f"Bearer {token}"}, timeout=15)


ENV = {"CITYBRAIN_INCIDENT_HOLD_S": "5"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().up()
    yield r
    r.down()


@pytest.fixture
def stack(settings: Settings, start_worker: Callable[..., Proc], start_api: Callable[[], Api],
          receiver: Receiver, tmp_path: Path) -> Iterator[Api]:
    (tmp_path / "cases.yaml").write_text(LIMITS)
    ENV["CITYBRAIN_CASES_FILE"] = str(tmp_path / "cases.yaml")
    produce(settings, settings.topics.registry,
            [(e["id"].encode(), orjson.dumps(e)) for e in [FEEDER] + POWERED + WITNESSES])
    notifier = Proc(["notify"], child_env(settings, **{**FAST, **ENV}, CITYBRAIN_WEBHOOK_URLS=receiver.url),
                    tmp_path / "notifier.log")
    api = start_api()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
    yield api
    notifier.stop()


def case_levels(receiver: Receiver) -> list[tuple[str, str]]:
    """The (level, status) of each case entry told, in order, repeats left out."""
    told: list[tuple[str, str]] = []
    for _, p in receiver.received:
        for e in p["alerts"]:
            if e["labels"]["alertname"] == "case" and (e["labels"]["level"], e["status"]) not in told:
                told.append((e["labels"]["level"], e["status"]))
    return told


@pytest.mark.parametrize("cause_first", [True, False], ids=["cause-first", "cause-after-its-effects"])
def test_an_unaccepted_case_climbs_to_the_street_where_it_is_accepted_and_closed(
        settings: Settings, stack: Api, start_worker: Callable[..., Proc], receiver: Receiver,
        cause_first: bool) -> None:
    api = stack
    # Gates whose feeder's alert comes after theirs wait for it as long as this, not
    # becoming an area incident first.
    env = ENV if cause_first else {**ENV, "CITYBRAIN_INCIDENT_HOLD_S": "3600"}
    worker = start_worker(**env)
    grid = (settings.topics.events("grid"), event_records(feeder_events(), "feeder_id"))
    gates = (settings.topics.events("gate"), event_records(gate_events(), "gate_id"))
    if cause_first:
        produce(settings, *grid)
        produce(settings, *gates)
    else:
        produce(settings, *gates)
        wait_for(lambda: len(api.get("/api/v1/alerts", params={"rule": "gate.offline"}).json()["alerts"]) == 3,
                 timeout=60)
        produce(settings, *grid)
    (incident,) = wait_for(lambda: api.get("/api/v1/incidents").json()["incidents"], timeout=60)
    assert incident["kind"] == "feeder_outage"  # the feeder's, whichever alert came first
    cid = case_id(incident["id"])
    case = wait_for(lambda: api.get(f"/api/v1/cases/{cid}").json() if api.get(f"/api/v1/cases/{cid}").status_code == 200
                    else None, timeout=30)
    assert (case["incident"], case["area"], case["severity"]) == (incident["id"], AREA, "critical")
    assert case["history"][0]["level"] == "grid_cell" and case["history"][0]["unit"] == "湛山社区第1网格网格员"

    # Mid-escalation, the worker dies: its successor neither repeats nor skips a step.
    wait_for(lambda: api.get(f"/api/v1/cases/{cid}").json()["level"] == "community", timeout=30)
    worker.kill()
    start_worker(**env)

    at_street = wait_for(lambda: (lambda c: c if c["level"] == "street" else None)(
        api.get(f"/api/v1/cases/{cid}").json()), timeout=30)
    assert [(h["action"], h["level"]) for h in at_street["history"]] == [
        ("dispatched", "grid_cell"), ("escalated", "community"), ("escalated", "street")]
    assert at_street["escalations"] == 2 and at_street["unit"] == "湛山街道街道办事处"
    assert api.get("/api/v1/cases", params={"level": "street"}).json()["total"] == 1

    assert act(api, cid, "accept", token="tv").status_code == 403
    # Another community's token: the case, its incident and its alerts are not there for it.
    assert act(api, cid, "accept", token="tc").status_code == 404
    assert api.get(f"/api/v1/cases/{cid}", token="tc").status_code == 404
    assert api.get("/api/v1/cases", token="tc").json() == {"cases": [], "total": 0, "next_cursor": None}
    assert api.get(f"/api/v1/incidents/{incident['id']}", token="tc").status_code == 404
    assert api.get("/api/v1/incidents", token="tc").json()["total"] == 0
    gate_alert = api.get("/api/v1/alerts", params={"rule": "gate.offline"}).json()["alerts"][0]
    assert api.get(f"/api/v1/alerts/{gate_alert['id']}", token="tc").status_code == 404
    assert api.get("/api/v1/alerts", token="tc").json()["total"] == 0
    assert httpx.post(f"{api.url}/api/v1/alerts/{gate_alert['id']}/ack", json={"by": "x"},
                      headers={"Authorization": "Bearer tc"}).status_code == 404
    assert api.get(f"/api/v1/cases/{cid}", token="tz").status_code == 200  # its street's
    feeds = {token: Live(api, token=token, position="") for token in ("tz", "tc")}  # from the beginning
    for feed in feeds.values():
        wait_for(lambda f=feed: any(m["type"] == "caught_up" for m in f.messages), timeout=10)
        feed.close()
    assert feeds["tz"].alerts() and not feeds["tc"].alerts()
    assert act(api, cid, "feedback").status_code == 409  # not accepted yet
    accepted = act(api, cid, "accept", note="已派抢修队")
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    assert act(api, cid, "return").status_code == 422  # a return needs its reason
    closed = act(api, cid, "close", note="线路已恢复供电")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    history = closed.json()["history"]
    assert [(h["action"], h["by"], h["level"]) for h in history][-2:] == [
        ("accepted", "湛山街道值班员", "street"), ("closed", "湛山街道值班员", "street")]
    assert history[-1]["note"] == "街道值班员 张强: 线路已恢复供电"
    assert closed.json()["on_time"] is False  # it had to be escalated
    assert act(api, cid, "close").status_code == 409
    assert api.get("/api/v1/cases/nope").status_code == 404
    assert [c["id"] for c in api.get("/api/v1/cases").json()["cases"]] == [cid]  # one case, not two

    # The street's KPIs, against a reference from the case's own timeline.
    def at(action: str) -> float:
        return next(ms(h["at"]) for h in history if h["action"] == action) / 1000
    street = api.get("/api/v1/areas/street/湛山街道").json()
    assert street["cases"] == {"opened": 1, "closed": 1, "closure_rate": 1.0, "on_time_rate": 0.0,
                               "mean_accept_s": pytest.approx(at("accepted") - at("dispatched")),
                               "mean_close_s": pytest.approx(at("closed") - at("dispatched")), "overdue": 0}
    assert street["cases"]["mean_accept_s"] > 6  # two levels let it wait 3 s each
    cell = next(c for c in street["children"] if c["id"] == "湛山社区")
    assert cell["cases"]["closure_rate"] == 1.0
    metrics = httpx.get(f"{api.url}/metrics").text
    assert 'citybrain_cases_closure_rate{area="湛山街道",level="street"} 1.0' in metrics
    assert 'citybrain_cases_opened_total{area="市南区",level="district"} 1.0' in metrics

    # Each level was told once, as it got the case; the old one resolved beside it.
    wait_for(lambda: ("street", "resolved") in case_levels(receiver), timeout=30)
    assert case_levels(receiver) == [("grid_cell", "firing"), ("grid_cell", "resolved"), ("community", "firing"),
                                     ("community", "resolved"), ("street", "firing"), ("street", "resolved")]
    entry = next(e for _, p in receiver.received for e in p["alerts"] if e["labels"]["alertname"] == "case")
    assert entry["labels"]["unit"] == "湛山社区第1网格网格员" and entry["generatorURL"].endswith(f"/api/v1/cases/{cid}")


def test_the_case_board_shows_the_escalated_case_and_an_operator_accepts_it_from_the_page(
        settings: Settings, stack: Api, start_worker: Callable[..., Proc], request: pytest.FixtureRequest) -> None:
    api = stack
    start_worker(**ENV)
    produce(settings, settings.topics.events("grid"), event_records(feeder_events(), "feeder_id"))
    produce(settings, settings.topics.events("gate"), event_records(gate_events(), "gate_id"))
    (incident,) = wait_for(lambda: api.get("/api/v1/incidents").json()["incidents"], timeout=60)
    cid = case_id(incident["id"])
    wait_for(lambda: api.get(f"/api/v1/cases/{cid}").status_code == 200
             and api.get(f"/api/v1/cases/{cid}").json()["level"] == "street", timeout=30)

    browser: Browser = request.getfixturevalue("browser")  # after producing: Playwright holds an event loop
    page = browser.new_page(viewport={"width": 1600, "height": 1000}, locale="zh-CN")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(api.url)
    sign_in(page, "tz")
    row = page.locator(f"#case-board [data-level=street] [data-case='{cid}']")
    expect(row).to_contain_text("督办 Escalated ×2", timeout=15_000)
    expect(row).to_contain_text("湛山街道街道办事处")
    expect(page.locator("#case-board [data-level=grid_cell]")).to_contain_text("No cases")
    row.locator("button.case-accept").click()
    page.fill("#act-by", "街道值班员 张强")
    page.fill("#act-note", "已派抢修队")
    page.click("#act-ok")
    expect(page.locator("#alert-notice")).to_contain_text("受理 Accept ✓", timeout=15_000)
    case = api.get(f"/api/v1/cases/{cid}").json()
    assert case["status"] == "accepted"
    assert (case["history"][-1]["by"], case["history"][-1]["note"]) == ("湛山街道值班员", "街道值班员 张强: 已派抢修队")
    expect(row.locator("button.case-close")).to_be_visible(timeout=15_000)
    page.screenshot(path=str(Path(settings.data_dir) / "case-board.png"), full_page=True)
    assert errors == []


def test_an_alert_of_a_rule_the_cases_file_names_opens_its_own_case(
        settings: Settings, start_worker: Callable[..., Proc], start_api: Callable[[], Api], tmp_path: Path) -> None:
    (tmp_path / "open.yaml").write_text("open_for: [grid.outage]\n")
    produce(settings, settings.topics.registry, [(b"F-0001", orjson.dumps(FEEDER))])
    start_worker(CITYBRAIN_CASES_FILE=str(tmp_path / "open.yaml"))
    api = start_api()
    wait_for(lambda: api.get("/readyz", token=None).status_code == 200, timeout=60)
    produce(settings, settings.topics.events("grid"), event_records(feeder_events(), "feeder_id"))
    (outage,) = wait_for(lambda: api.get("/api/v1/alerts", params={"rule": "grid.outage"}).json()["alerts"], timeout=60)
    cases = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(api.get("/api/v1/cases").json()["cases"]),
                     timeout=30)
    assert {(c["alert"], c["incident"] is not None) for c in cases} == {(outage["id"], False), (None, True)}
    assert api.get(f"/api/v1/cases/{case_id(outage['id'])}").json()["history"][0]["note"] == f"alert {outage['id']}"
