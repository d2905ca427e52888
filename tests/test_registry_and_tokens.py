"""Where entities are (registry) and who may call the API (tokens)."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest

from api.auth import Principal, TokenBook
from services import tokens
from services.config import ConfigError, Settings
from streams.registry import Registry

FEEDER = {"id": "F-0001", "domain": "grid", "name": "湛山线", "district": "市南区",
          "street": "湛山街道", "community": "湛山社区", "grid_cell": "湛山社区第1网格",
          "lat": 36.06, "lon": 120.38, "rated_kw": 5000, "nominal_kv": 10.0}


def test_registry_from_json_array_and_json_lines(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(orjson.dumps([FEEDER]))
    (tmp_path / "b.jsonl").write_bytes(orjson.dumps(FEEDER) + b"\n")
    for name in ("a.json", "b.jsonl"):
        assert Registry.from_file(tmp_path / name).area("F-0001")["street"] == "湛山街道"


def test_unknown_entities_are_unassigned_and_topic_records_update_the_registry() -> None:
    r = Registry()
    assert set(r.area("F-0001").values()) == {"unassigned"}
    r.apply(b"F-0001", orjson.dumps(FEEDER))
    assert r.area("F-0001")["district"] == "市南区"
    r.apply(b"F-0002", b"not json")  # skipped, not fatal
    r.apply(b"F-0001", None)  # tombstone
    assert r.get("F-0001") is None and len(r) == 0


def test_token_spec_parsing_and_errors() -> None:
    assert tokens.parse("a=viewer, b=operator") == {"a": Principal("viewer"), "b": Principal("operator")}
    # The contract's full form: token=role[:name][@level:area]; a token may hold "=".
    assert tokens.parse("t=operator:值班长\npad===admin:李主任@district:市南区\nv=viewer@street:湛山街道") == {
        "t": Principal("operator", "值班长"), "pad==": Principal("admin", "李主任", ("district", "市南区")),
        "v": Principal("viewer", None, ("street", "湛山街道"))}
    for bad in ("a=superuser", "just-a-token", "t=operator:", "t=operator: ", "t=operator:a\u202eb",
                "t=operator:a\x1bb", "t=operator:a\x00", "t=viewer@city:青岛", "t=viewer@district:"):
        with pytest.raises(ConfigError) as refused:
            tokens.parse(bad)
        assert "\n" not in str(refused.value)


def test_generated_tokens_one_per_role_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    book = tokens.generate(path)
    assert sorted(p.role for p in book.values()) == sorted(tokens.ROLES)
    assert all(len(t) >= 43 for t in book)  # 32 random bytes, url-safe base64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokens.configured(Settings(token_file=path)) == book


def test_token_book_finds_roles_and_nothing_for_prefixes() -> None:
    book = TokenBook({"secret-viewer": "viewer", "secret-admin": Principal("admin", "李主任")})
    assert book.principal_of("secret-admin") == Principal("admin", "李主任", number=2)
    assert book.principal_of("secret-viewer").identity == "viewer token #1"  # unnamed
    assert book.principal_of("secret") is None and book.principal_of("") is None
