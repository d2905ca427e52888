"""Hostile input: generated garbage never stops the parser or the worker, every bad record
gets a reason, and every good event beside it is processed."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from services.config import Settings
from streams import columns
from streams.columns import decode_record as decode
from streams.events import DEFAULT_MAX_BATCH, SCHEMAS, Invalid, loads, validate
from tests.conftest import Api, Proc, produce, read_all, wait_for

FIELDS = ["type", "ts", "gate_id", "sensor_id", "feeder_id", "direction", "method", "result", "subject",
          "temperature_c", "tailgate", "interval_s", "volume", "speed_kmh", "occupancy", "load_kw",
          "voltage_kv", "frequency_hz", "breaker", "power_factor", "events"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["gate.pass", "gate.heartbeat", "traffic.flow", "grid.measurement", "in", "out",
                     "face", "granted", "denied", "open", "closed", "2026-11-21T08:00:00+08:00",
                     "2026-11-21T08:00:00", "9999-99-99", "\u0000\ufffd\U0001f600"]),
    st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=8)),
    max_leaves=20)
events = st.dictionaries(st.sampled_from(FIELDS), values, max_size=12)


def encode(doc: Any) -> bytes:
    # The stdlib writes NaN, Infinity and integers beyond 64 bits, as hostile producers do.
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


@hsettings(max_examples=15 * hsettings.default.max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domain=st.sampled_from(sorted(SCHEMAS)), doc=st.one_of(events, values, st.builds(lambda e: {"events": e}, st.lists(events, max_size=6))))
def test_decode_never_raises_and_accounts_for_every_item(domain: str, doc: Any) -> None:
    good, bad = decode(domain, encode(doc))
    items = doc["events"] if isinstance(doc, dict) and isinstance(doc.get("events"), list) and "type" not in doc else [doc]
    assert len(good) + len(bad) == len(items) or (len(bad) == 1 and not good)
    for e in good:  # whatever passed is a real, physically possible event
        assert validate(domain, dict(e)) and math.isfinite(float(e["ts"]))
        for name, v in e.items():
            if isinstance(v, float):
                assert math.isfinite(v), name
    assert all(b.reason and ":" in b.reason for b in bad)


@given(raw=st.binary(max_size=300))
@hsettings(max_examples=10 * hsettings.default.max_examples, deadline=None)
def test_arbitrary_bytes_are_rejected_with_a_reason_or_parsed(raw: bytes) -> None:
    good, bad = decode("traffic", raw)
    assert good or bad[0].reason


def test_deep_nesting_and_huge_batches_are_rejected_not_fatal() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert decode("grid", deep)[1][0].reason.startswith(("invalid json", "wrong type"))
    huge = orjson.dumps({"events": [{"type": "x"}] * (DEFAULT_MAX_BATCH + 1)})
    assert decode("grid", huge)[1][0].reason.startswith("oversized batch")


def junk(rnd: random.Random, depth: int = 0) -> Any:
    """A random JSON-ish value: the kinds of garbage the property tests explore, drawn
    quickly enough for ten thousand records."""
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rnd.choice([None, True, False, "", "\u0000\ufffd\U0001f600", "2026-11-21T08:00:00"])
    if kind == 1:
        return rnd.choice([float("nan"), float("inf"), -1e308, 2**70, -(2**64), 0.0])
    if kind == 2:
        return rnd.randrange(-10**6, 10**6)
    if kind == 3:
        return "".join(chr(rnd.randrange(32, 0x2FFFF)) for _ in range(rnd.randrange(12)))
    if kind in (4, 5):
        base = {"type": "traffic.flow", "ts": 1_795_219_200_000, "sensor_id": "T-1", "interval_s": 60,
                "volume": 3, "speed_kmh": 50.0, "occupancy": 0.2}
        base[rnd.choice(FIELDS)] = junk(rnd, depth + 1)  # one field wrong, missing or odd
        if rnd.random() < 0.3:
            base.pop(rnd.choice(list(base)))
        return base
    if kind == 6:
        return [junk(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    if kind == 7:
        return {"events": [junk(rnd, depth + 1) for _ in range(rnd.randrange(5))]}
    return {rnd.choice(FIELDS): junk(rnd, depth + 1) for _ in range(rnd.randrange(5))}


def hostile_records(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """n records for the traffic topic: about half valid events, the rest garbage."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if rnd.random() < 0.5:
            doc: Any = {"type": "traffic.flow", "ts": 1_795_219_200_000 + i, "sensor_id": f"T-{i % 50}",
                        "interval_s": 60, "volume": rnd.randrange(50), "speed_kmh": rnd.uniform(0, 120),
                        "occupancy": rnd.random()}
        else:
            doc = junk(rnd)
        raw = encode(doc) if rnd.random() < 0.95 else bytes(rnd.randrange(256) for _ in range(20))
        out.append((f"k{i}".encode(), raw))  # keyed by anything: events get forwarded home
    return out


def test_ten_thousand_hostile_records_through_a_real_worker(settings: Settings, worker: Proc) -> None:
    records = hostile_records(10_000, seed=4)
    expected_good = expected_bad = 0
    for _, raw in records:
        good, bad = decode("traffic", raw)
        expected_good += len(good)
        expected_bad += len(bad)
    assert expected_good > 4000 and expected_bad > 4000
    produce(settings, settings.topics.events("traffic"), records)

    def accounted() -> bool:
        latest = [v for _, v in read_all(settings, settings.topics.vitals)]
        final = {v["partition"]: v for v in latest}
        return (sum(v["events"] + v["late"] for v in final.values()) == expected_good
                and sum(v["rejected"] for v in final.values()) == expected_bad)

    wait_for(accounted, timeout=120, every=1.0)
    late = sum(v["late"] for v in {v["partition"]: v for _, v in read_all(
        settings, settings.topics.vitals)}.values())
    letters = [doc for _, doc in read_all(settings, settings.topics.deadletter)]
    assert len(letters) == expected_bad + late
    assert all(d["reason"] and d["topic"] == settings.topics.events("traffic") for d in letters)
    assert worker.proc.poll() is None  # still running


def test_hostile_http_input_gets_json_errors_never_500(settings: Settings, api: Api) -> None:
    # A known device, so the hostile query parameters reach the code that parses them.
    produce(settings, settings.topics.registry,
            [(b"T-1", orjson.dumps({"id": "T-1", "domain": "traffic", "district": "市南区"}))])
    wait_for(lambda: api.get("/api/v1/entities/traffic/T-1").status_code == 200)
    for path in ["/api/v1/entities/traffic/' OR 1=1 --", "/api/v1/entities/traffic/%00",
                 "/api/v1/entities/<script>/x", "/api/v1/areas/district/%F0%9F%98%80",
                 "/api/v1/entities/traffic/T-1?from=1e309", "/api/v1/entities/traffic/T-1?to=-1",
                 "/api/v1/entities/traffic/T-1?from=" + "9" * 5000]:
        r = api.get(path)
        assert r.status_code < 500, (path, r.status_code)
        assert "detail" in r.json()
    import httpx

    try:  # an oversized header may be refused with 4xx or by closing the connection
        assert api.get("/api/v1/overview", token="x" * 100_000).status_code in (400, 401, 431)
    except httpx.TransportError:
        pass
    assert api.get("/healthz", token=None).status_code == 200  # and the API is still there


HEARTBEAT = {"type": "gate.heartbeat", "ts": 1_795_219_200_000, "gate_id": "G-1"}
TEMPLATES = {
    "gate": [{"type": "gate.pass", "ts": "2026-11-21T08:00:00.250+08:00", "gate_id": "G-1", "direction": "in",
              "method": "face", "result": "granted", "subject": "s1", "temperature_c": 36.6, "tailgate": False},
             HEARTBEAT],
    "traffic": [{"type": "traffic.flow", "ts": "2026-11-21T00:00:00Z", "sensor_id": "T-1", "interval_s": 60,
                 "volume": 3, "speed_kmh": 50.5, "occupancy": 0.2}],
    "grid": [{"type": "grid.measurement", "ts": 1_795_219_200_000, "feeder_id": "F-1", "load_kw": -120.5,
              "voltage_kv": 10.2, "frequency_hz": 50.0, "breaker": "closed", "power_factor": 0.95}],
}
NOW_MS = 1_795_219_200_000 + 3_600_000
odd = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
    st.sampled_from(["", "x" * 129, "\ud800", "in", "out", "qr", "denied", "open", "gate.pass", "gate.heartbeat",
                     "traffic.flow", "2026-11-21T08:00:00Z", "2026-11-21T08:00:00.1234567Z", "2026-02-29T00:00:00Z",
                     "2028-02-29T23:59:59.999-05:30", "2026-11-21 08:00:00+08:00", "2026-11-21T08:00:00+0800",
                     "2026-11-21T24:00:00Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2026-11-21T08:00:00",
                     "２０２６-11-21T08:00:00Z"]),
    st.integers(min_value=NOW_MS - 10**6, max_value=NOW_MS + 10**6), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def near_valid(draw: st.DrawFn, domain: str) -> Any:
    """Mostly a valid event of the domain, a field now and then missing, odd, or added."""
    ev = dict(draw(st.sampled_from(TEMPLATES[domain])))
    for name in draw(st.lists(st.sampled_from([*ev, "feeder_id", "breaker", "extra"]), max_size=2)):
        if draw(st.booleans()):
            ev.pop(name, None)
        else:
            ev[name] = draw(odd)
    return ev if draw(st.integers(0, 30)) else draw(st.one_of(odd, st.just([ev])))


@hsettings(max_examples=5 * hsettings.default.max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_batches_decide_exactly_as_the_per_event_validator(data: st.DataObject) -> None:
    """The vectorised path is an optimisation only: every event of a batch is accepted
    (with the same fields) or rejected (with the same reason and index) exactly as the
    per-event validator judges it on its own, however the batch mixes good and bad."""
    domain = data.draw(st.sampled_from(sorted(SCHEMAS)))
    batches = data.draw(st.lists(st.lists(near_valid(domain), min_size=1, max_size=25), min_size=1, max_size=4))
    records = [(offset, None, encode({"events": batch})) for offset, batch in enumerate(batches)]
    cols, rejected = columns.decode(domain, records, NOW_MS)
    expected_good, expected_bad = [], []
    for offset, _, raw in records:  # read as the worker reads them (orjson first)
        for index, item in enumerate(loads(raw)["events"]):
            try:
                expected_good.append(validate(domain, item, NOW_MS))
            except Invalid as exc:
                expected_bad.append((offset, index, str(exc)))
    assert [cols.event(i) for i in range(len(cols))] == expected_good
    assert [(r.offset, r.reject.index, r.reject.reason) for r in rejected] == expected_bad
    assert cols.offset.tolist() == [o for o, _, raw in records for item in loads(raw)["events"] if _valid(domain, item)]


def _valid(domain: str, item: Any) -> bool:
    try:
        validate(domain, item, NOW_MS)
    except Invalid:
        return False
    return True
