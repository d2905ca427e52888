"""The service's edges: every route but a few public ones needs a token, no token ever
reaches a log or an error body, and generated tokens are strong and private."""

from __future__ import annotations

import base64
import re
import secrets
import stat
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect

from api.app import create_app
from services import tokens
from services.config import Settings
from tests.conftest import Proc, child_env, free_port, wait_for

# What anyone may reach: probes, metrics, the dashboard shell and its files, the API docs.
PUBLIC = {"/healthz", "/readyz", "/metrics", "/", "/static", "/openapi.json", "/docs",
          "/docs/oauth2-redirect", "/docs/assets", "/redoc"}
SECRET = secrets.token_urlsafe(32)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # No lifespan (no Kafka): auth is decided before a handler touches any read model.
    return TestClient(create_app(Settings(data_dir=tmp_path), {SECRET: "admin"}),
                      raise_server_exceptions=False)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_but_the_public_ones_needs_a_token(client: TestClient) -> None:
    """Walks the app's routes, so a route added later without auth fails here."""
    public = set()
    for route in iter_route_contexts(client.app.routes):
        path = route.path
        if isinstance(route.original_route, Mount) or path in PUBLIC:
            public.add(path)
            assert client.get(_concrete(path)).status_code != 401, path
        elif route.methods is None:  # a WebSocket: the first message carries the token
            for first in ({}, {"token": "not-a-token"}):
                with client.websocket_connect(path) as ws:
                    ws.send_text(orjson.dumps(first).decode())
                    with pytest.raises(WebSocketDisconnect) as closed:
                        ws.receive_text()
                    assert closed.value.code == 4401, path
        else:
            for method in route.methods - {"HEAD"}:
                for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Basic {SECRET}"}):
                    r = client.request(method, _concrete(path), headers=headers)
                    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
    assert public == PUBLIC, "the public list names exactly what is public"
    # The OpenAPI document says so too, for the clients generated from it.
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            assert path in PUBLIC or operation.get("security") == [{"HTTPBearer": []}], (method, path)


def test_a_request_without_a_token_is_refused_before_its_body_is_read(client: TestClient) -> None:
    r = client.post("/api/v1/alerts/x/ack", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401


@pytest.mark.parametrize("level", ["info", "debug"])
def test_no_token_reaches_a_log_or_an_answer(settings: Settings, tmp_path: Path, level: str) -> None:
    viewer, operator, wrong = (secrets.token_urlsafe(32) for _ in range(3))
    port = free_port()
    api = Proc(["api", "--api-port", str(port)],
               child_env(settings, CITYBRAIN_API_TOKENS=f"{viewer}=viewer,{operator}=operator",
                         CITYBRAIN_LOG_LEVEL=level), tmp_path / "api.log")
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return api.proc.poll() is not None  # exited: the asserts below show its log

    wait_for(answers, timeout=30)
    calls = [("GET", "/api/v1/overview", viewer, 200), ("GET", "/api/v1/overview", wrong, 401),
             ("GET", f"/api/v1/overview?token={viewer}", None, 401),  # tokens in URLs are not taken
             ("GET", f"/api/v1/alerts?cursor={wrong}", viewer, 422),
             ("POST", "/api/v1/alerts/x/ack", viewer, 403), ("POST", "/api/v1/alerts/x/ack", operator, 404),
             ("POST", "/api/v1/ingest/grid", viewer, 403)]
    answered = []
    for method, path, token, status in calls:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.request(method, url + path, headers=headers, json={"by": "值班员"}, timeout=10)
        assert r.status_code == status, (method, path, r.text)
        answered.append(r.text + str(r.headers))
    for token in (wrong, viewer):
        with connect(url.replace("http", "ws") + "/api/v1/alerts/live") as ws:
            ws.send(orjson.dumps({"token": token}).decode())
            answered.append(str(ws.recv(timeout=10) if token == viewer else ws.close_reason))
    api.stop()
    log = api.output()
    assert "Uvicorn running" in log  # the log is there to search
    for secret in (viewer, operator, wrong):
        assert secret not in log
        assert not any(secret in text for text in answered)


def test_generated_tokens_are_strong_and_only_their_owner_may_read_them(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("old\n")
    path.chmod(0o644)  # a file already there, readable by all: it must not stay so
    book = tokens.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for token in book:
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8 >= 128
    assert len(set(book) | set(tokens.generate(tmp_path / "again"))) == 2 * len(tokens.ROLES)
