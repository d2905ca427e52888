"""The routes' shape: each asks for the role contract §5 names, and route modules share
helpers through modules below them, never by importing one another."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from api.app import create_app
from services.config import Settings
from tests.test_layers import imported, modules

TOKENS = {"v" * 32: "viewer", "o" * 32: "operator", "a" * 32: "admin", "i" * 32: "ingest"}
GRANTED = {"viewer": {"viewer", "operator", "admin"}, "operator": {"operator", "admin"}, "ingest": {"ingest"}}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # No lifespan (no Kafka): the token is checked before a handler would need the broker.
    return TestClient(create_app(Settings(data_dir=tmp_path), TOKENS), raise_server_exceptions=False)


def _needs(path: str, method: str) -> str:
    if path.startswith("/api/v1/ingest"):
        return "ingest"
    return "operator" if method == "POST" else "viewer"


def test_each_route_asks_for_its_role_and_no_other(client: TestClient) -> None:
    checked = 0
    for route in iter_route_contexts(client.app.routes):
        if route.methods is None or not route.path.startswith("/api/v1"):
            continue  # not an HTTP route of the API (the live feed checks its own token)
        for method in route.methods - {"HEAD"}:
            needs = _needs(route.path, method)
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            for token, role in TOKENS.items():
                status = client.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                        json={"by": "值班员"}).status_code
                assert (status == 403) == (role not in GRANTED[needs]), (method, route.path, role, status)
                assert status != 401, (method, route.path, role)
            checked += 1
    assert checked >= 20  # every route of contract §5 and §8, and the wall's


def test_no_route_module_imports_another() -> None:
    routes = {name: path for name, path in modules().items() if name.startswith("api.routes.")}
    found = [f"{name} imports {target}" for name, path in routes.items()
             for target in imported(path) if target.startswith("api.routes.") and target != name]
    assert not found, "\n".join(found)
