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


def _doc(i: int) -> dict:
    return {"id": f"{i:016x}", "updated_at": f"2026-11-30T08:{i // 3:02d}:00.000+00:00", "seq": 1,
            "area": {"district": "市南区" if i % 2 else "市北区", "street": "s", "community": "c", "grid_cell": "g"}}


@pytest.mark.parametrize("name, extra", [
    ("alerts", {"rule": "grid.overload", "domain": "grid", "entity": "F-1", "severity": "major", "status": "firing"}),
    ("incidents", {"kind": "feeder_outage", "status": "open", "cause": None, "children": []}),
    ("cases", {"status": "handled", "level": "community"}),
])
def test_a_list_walked_by_its_cursor_gives_each_item_once_newest_first(client: TestClient, name: str,
                                                                       extra: dict) -> None:
    parts = client.app.state.parts
    docs = [{**_doc(i), **extra} for i in range(25)]
    view = {"alerts": parts.views.alerts.alerts, "incidents": parts.incidents.incidents, "cases": parts.cases.cases}[name]
    view.update({d["id"]: d for d in docs})
    viewer = {"Authorization": f"Bearer {'v' * 32}"}
    seen, cursor = [], None
    while True:
        r = client.get(f"/api/v1/{name}", params={"limit": 10, "area": "市南区", **({"cursor": cursor} if cursor else {})},
                       headers=viewer)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 12 and len(body[name]) <= 10
        seen += [d["id"] for d in body[name]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    south = [d for d in docs if d["area"]["district"] == "市南区"]
    assert seen == [d["id"] for d in sorted(south, key=lambda d: (d["updated_at"], d["id"]), reverse=True)]
    assert client.get(f"/api/v1/{name}", params={"cursor": "not-one"}, headers=viewer).status_code == 422
