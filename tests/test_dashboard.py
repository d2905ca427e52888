"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, on
the real stack (broker, worker, API). A feeder's outage arrives while the page is open and
must appear in the live feed; a viewer is refused, an operator acknowledges it by clicking,
and a page that lost its link catches up on what it missed. A feeder's chart and its
area's draw the forecast band ahead of "now" once there is history to learn, and say
there is no forecast before.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import Api, wait_for
from tests.test_alerts import FEEDER, normal, outage, reading, stack  # noqa: F401 - stack is a fixture used here

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


def rhythm(start_s: int, seconds: int) -> list[dict[str, Any]]:
    """A feeder's load every 10 s: a half-hour swing of ±400 kW with noise, so the
    forecast's intervals have errors to learn from."""
    rng = random.Random(start_s)
    return [reading(t, load_kw=round(2500 + 400 * math.sin(2 * math.pi * t / 1800) + rng.gauss(0, 40), 1))
            for t in range(start_s, start_s + seconds, 10)]


def band_ahead_of_now(chart: Any) -> bool:
    """Every corner of the chart's shaded band lies right of its "now" line."""
    return chart.evaluate("""(svg) => {
        const now = Number(svg.querySelector('line.now').getAttribute('x1'));
        const xs = [...svg.querySelectorAll('polygon.band')].flatMap((p) =>
            p.getAttribute('points').split(' ').map((xy) => Number(xy.split(',')[0])));
        return xs.length > 0 && xs.every((x) => x >= now);
    }""")


def test_the_device_and_area_charts_draw_the_forecast_band_ahead_of_now(
        stack: Api, page: Page, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    api = stack
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ingest(api, rhythm(0, 50))  # one window, still open: nothing to learn yet
    page.goto(api.url)
    sign_in(page, "tv")
    page.click("#drawer-open")
    page.fill("#entity-id", "F-0001")
    page.select_option("#entity-domain", "grid")
    page.click("#entity-form button[type=submit]")
    device = page.locator("#entity-view")
    expect(device.locator("svg.chart line.now")).to_have_count(1, timeout=30_000)  # once its window is in
    expect(device.locator(".forecast-note")).to_contain_text("No forecast yet")
    expect(device.locator("polygon.band")).to_have_count(0)
    device.screenshot(path=str(tmp_path / "forecast-none.png"))

    # Eighty minutes of history arrive: the open chart refreshes (every 10 s) to a band.
    ingest(api, rhythm(50, 80 * 60))
    # (the band reaches +60 min once about 60 windows past the open ones are learnt)
    wait_for(lambda: api.get("/api/v1/forecasts/grid/F-0001").json()["learnt"] >= 70, timeout=90)
    chart = device.locator("svg.chart")
    expect(chart.locator("polygon.band")).not_to_have_count(0, timeout=30_000)
    expect(device.locator(".forecast-note")).to_have_count(0)
    assert band_ahead_of_now(chart)
    expect(chart.locator("polyline.forecast")).to_have_count(1)
    expect(chart.locator("text.forecast-label")).to_contain_text("预测 Forecast · 80 % 区间 band")
    figures = device.locator(".forecast-figures")
    for minutes in (15, 30, 60):
        expect(figures).to_contain_text(f"+{minutes} min ")
    expect(figures).not_to_contain_text("no band yet", timeout=15_000)
    refresh_ms = page.evaluate("""async () => {
        const t0 = performance.now();
        await openEntity('grid', 'F-0001', true);
        return performance.now() - t0;
    }""")
    print(f"device view refresh, its windows and forecast fetched and drawn: {refresh_ms:.0f} ms")
    shot = tmp_path / "forecast-device.png"
    device.screenshot(path=str(shot))
    print(f"device forecast screenshot: {shot}")

    # The feeder's district: its grid totals, charted with their forecast too.
    page.click("#district-buttons button:has-text('%s')" % FEEDER["district"])
    grid = page.locator("#area-view .tile", has_text="电网 Grid")
    expect(grid.locator("polygon.band")).not_to_have_count(0, timeout=30_000)
    assert band_ahead_of_now(grid.locator("svg.chart"))
    expect(page.locator("#area-view .tile", has_text="门禁 Gates").locator(".forecast-note")).to_have_text(
        "暂无预测 No forecast yet")
    shot = tmp_path / "forecast-area.png"
    grid.screenshot(path=str(shot))
    print(f"area forecast screenshot: {shot}")

    # On the wall screen (1920×1080) the chart keeps to the drawer, and the page to the screen.
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.click("#entity-form button[type=submit]")
    expect(device.locator("svg.chart polygon.band")).not_to_have_count(0, timeout=10_000)
    drawer, drawn = page.locator("#drawer").bounding_box(), device.locator("svg.chart").bounding_box()
    assert drawer and drawn
    assert drawer["x"] <= drawn["x"] and drawn["x"] + drawn["width"] <= drawer["x"] + drawer["width"]
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth "
                         "&& document.documentElement.scrollHeight <= innerHeight")
    device.locator("svg.chart").scroll_into_view_if_needed()
    shot = tmp_path / "forecast-wall.png"
    page.screenshot(path=str(shot))
    print(f"wall-size screenshot: {shot}")
    assert errors == []
