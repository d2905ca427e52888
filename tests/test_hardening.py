"""The service at its edges, as an attacker or a careless client would meet it (issue 22):
bounded metrics and connections, private files, accountable actions, security headers
and docs that work offline."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright

from api.app import create_app
from services.config import Settings
from tests.conftest import Api

ADMIN = "t-admin"


def client(tmp_path: Path, **settings: str) -> TestClient:
    # No lifespan (no Kafka): what is tested here is decided before any read model is read.
    return TestClient(create_app(Settings(data_dir=tmp_path, **settings), {ADMIN: "admin"}),
                      raise_server_exceptions=False)


# ---------------------------------------------------------------- bounded metrics


def test_made_up_methods_are_refused_and_do_not_grow_metrics(tmp_path: Path) -> None:
    c = client(tmp_path)
    for method in ("GET", "BREW", "X" * 8000):  # every series that can exist, once
        c.request(method, "/healthz")
    c.get("/metrics")
    before = len(c.get("/metrics").content)
    for i in range(300):
        r = c.request(f"M{i}" + "Y" * 2000, "/healthz")
        assert r.status_code == 405 and r.json() == {"detail": "method not allowed"}
    after = len(c.get("/metrics").content)
    assert after - before < 200, (before, after)  # counters' digits grow, not the series
    assert 'method="other",route="unmatched",status="405"' in c.get("/metrics").text


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize("path", ["/", "/static/dashboard.js", "/api/v1/overview", "/healthz",
                                  "/openapi.json", "/docs", "/redoc", "/nope"])
def test_every_answer_carries_the_security_headers(tmp_path: Path, path: str) -> None:
    r = client(tmp_path).get(path)
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    assert "http" not in csp.replace("'self'", "")  # no site but the API's own
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"


def test_the_dashboard_allows_no_inline_script(tmp_path: Path) -> None:
    csp = client(tmp_path).get("/").headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src" not in csp  # default-src 'self' rules


def test_trusted_hosts_refuse_other_host_names(tmp_path: Path) -> None:
    c = client(tmp_path, trusted_hosts="citybrain.example.cn,*.city.example.cn")
    for host in ("citybrain.example.cn", "citybrain.example.cn:8000", "api.city.example.cn"):
        assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example.com", "city.example.cn.evil.com", "127.0.0.1"):
        r = c.get("/healthz", headers={"Host": host})
        assert r.status_code == 400 and "host" in r.json()["detail"], host
        assert r.headers["x-content-type-options"] == "nosniff"
    # Unset, any host is served (the default, for a service on 127.0.0.1).
    assert client(tmp_path).get("/healthz", headers={"Host": "anything"}).status_code == 200


# ---------------------------------------------------------------- docs offline


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium fonts-noto-cjk; .ci/run does)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium)
        try:
            yield b
        finally:
            b.close()


def test_docs_render_with_no_network(api: Api, browser: Browser) -> None:
    """Swagger UI and ReDoc in Debian's chromium, every request off 127.0.0.1 refused (as
    on a command centre's network): both render, from the API's own files alone."""
    page = browser.new_page()
    elsewhere: list[str] = []
    problems: list[str] = []

    def offline(route, request) -> None:  # type: ignore[no-untyped-def]
        if request.url.startswith(api.url) or request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    page.route("**/*", offline)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(f"{api.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "citybrain" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock", timeout=10_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any(p.replace("\u200b", "") == "/api/v1/alerts/{alert_id}/ack" for p in paths), paths

    page.goto(f"{api.url}/redoc")
    page.wait_for_selector("h1:has-text('citybrain')", timeout=20_000)
    page.wait_for_selector("text=Acknowledge", timeout=10_000)

    assert elsewhere == []
    # The policy blocks no part of the docs themselves; only ReDoc's off-site logo, which
    # is how it should be.
    blocked = [p for p in problems if "Content Security Policy" in p]
    assert all("'https://cdn.redoc.ly/" in p for p in blocked), blocked
