"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, on
the real stack (broker, worker, API). A feeder's outage arrives while the page is open and
must appear in the live feed; a viewer is refused, an operator acknowledges it by clicking,
and a page that lost its link catches up on what it missed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import Api, wait_for
from tests.test_alerts import normal, outage, stack  # noqa: F401 - stack is a fixture used here

OFFICER = "值班员 王伟"


@pytest.fixture
def page(stack: Api, browser: Browser) -> Page:  # noqa: F811 - the imported fixture
    return browser.new_page(viewport={"width": 1600, "height": 1000}, locale="zh-CN")


def ingest(api: Api, events: list[dict[str, Any]]) -> None:
    r = httpx.post(f"{api.url}/api/v1/ingest/grid", json=events, headers={"Authorization": "Bearer ti"}, timeout=10)
    assert r.status_code == 202 and r.json()["rejected"] == 0, r.text


def sign_in(page: Page, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#feed-state")).to_contain_text("Live", timeout=10_000)


def answer_dialog(page: Page, note: str | None = None) -> None:
    if not page.input_value("#act-by"):
        page.fill("#act-by", OFFICER)
    if note:
        page.fill("#act-note", note)
    page.click("#act-ok")


def test_the_wall_shows_vitals_and_a_live_alert_that_an_operator_acknowledges(
        stack: Api, page: Page, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    api = stack
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ingest(api, normal(0, 60))
    page.goto(api.url)
    sign_in(page, "tv")

    # Vital signs: the grid tile counts the six readings; the other domains have tiles too.
    expect(page.locator("#tile-grid dt:has-text('Total events') + dd")).to_have_text("6", timeout=60_000)
    expect(page.locator("#tile-traffic dl dt")).not_to_have_count(0)
    expect(page.locator("#alert-list")).to_contain_text("No open alerts")

    # The breaker opens: the alert arrives over the live feed, with no reload.
    ingest(api, outage(60, 120))
    row = page.locator("#alert-list li.alert", has_text="grid.outage")
    expect(row).to_be_visible(timeout=60_000)
    expect(row.locator(".status")).to_have_text("告警中 Firing")
    expect(row.locator(".badge")).to_have_text("紧急 Critical")
    alert_id = row.get_attribute("data-id")
    expect(page.locator("#open-alerts")).to_contain_text("紧急 Critical 1", timeout=10_000)

    # A viewer may look, not act: the 403 is said plainly, and the alert stays firing.
    row.locator("button.act-ack").click()
    answer_dialog(page)
    expect(page.locator("#alert-notice")).to_contain_text("need an operator token")
    assert api.get(f"/api/v1/alerts/{alert_id}").json()["status"] == "firing"

    # An operator signs in (the officer's name was forgotten with the old token) and acknowledges.
    page.click("#sign-out")
    sign_in(page, "to")
    row = page.locator(f'#alert-list li[data-id="{alert_id}"]')
    row.locator("button.act-ack").click()
    expect(page.locator("#act-by")).to_have_value("")
    answer_dialog(page, note="抢修队已派出")
    expect(row.locator(".status")).to_have_text("已确认 Acknowledged", timeout=15_000)
    expect(row.locator("button.act-ack")).to_have_count(0)
    alert = api.get(f"/api/v1/alerts/{alert_id}").json()
    # Recorded as the token's holder (the duty post), the officer's typed name as the note's.
    assert (alert["status"], alert["acked_by"]) == ("acknowledged", "值班长")

    # The name is asked once: the next action offers it again (cancelled here).
    row.locator("button.act-resolve").click()
    expect(page.locator("#act-by")).to_have_value(OFFICER)
    page.click("#act-cancel")

    # Clicking the alert shows its history and its feeder's trend.
    row.locator(".alert-open").click()
    detail = page.locator("#alert-detail")
    expect(detail.locator(".history li")).to_have_count(2)
    expect(detail.locator(".history")).to_contain_text(f"{OFFICER}: 抢修队已派出")
    expect(detail.locator("svg.spark polyline")).not_to_have_count(0)

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"dashboard screenshot: {shot}")

    # The link drops; meanwhile the breaker closes and the alert resolves by itself. The
    # page resumes from its last position and the replay brings the change it missed.
    page.evaluate("dropSocket()")
    ingest(api, normal(180, 60))
    wait_for(lambda: api.get(f"/api/v1/alerts/{alert_id}").json()["status"] == "resolved", timeout=60)
    page.evaluate("connectFeed()")
    expect(page.locator("#alert-list")).to_contain_text("No open alerts", timeout=10_000)
    expect(detail.locator(".history li")).to_have_count(3)
    expect(detail).to_contain_text("已解除 Resolved")
    assert errors == []
