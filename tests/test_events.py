"""The event contract (CONTRACT §3): what is accepted, and the reason for what is not."""

from __future__ import annotations

import base64

import orjson
import pytest

from streams.columns import decode_record as decode
from streams.events import Invalid, Reject, deadletter, parse_ts, validate

PASS = {"type": "gate.pass", "ts": "2026-11-21T08:00:00+08:00", "gate_id": "G-0001",
        "direction": "in", "method": "face", "result": "granted", "subject": "a1b2c3",
        "temperature_c": 36.6, "tailgate": False}
FLOW = {"type": "traffic.flow", "ts": "2026-11-21T08:00:00+08:00", "sensor_id": "T-0001",
        "interval_s": 60, "volume": 23, "speed_kmh": 42.5, "occupancy": 0.18}
MEASURE = {"type": "grid.measurement", "ts": "2026-11-21T08:00:00+08:00", "feeder_id": "F-0001",
           "load_kw": 3120.5, "voltage_kv": 10.3, "frequency_hz": 50.01, "breaker": "closed"}
T0 = 1763683200000  # 2025-11-21T00:00:00Z


def reason(domain: str, event: dict) -> str:
    with pytest.raises(Invalid) as err:
        validate(domain, dict(event))
    return str(err.value)


def test_contract_examples_validate_and_gain_epoch_ms_and_entity() -> None:
    for domain, ev, entity in (("gate", PASS, "G-0001"), ("traffic", FLOW, "T-0001"),
                               ("grid", MEASURE, "F-0001")):
        out = validate(domain, dict(ev))
        assert out["ts"] == 1795219200000  # 2026-11-21T00:00:00Z
        assert out["entity"] == entity


def test_heartbeat_with_epoch_milliseconds() -> None:
    out = validate("gate", {"type": "gate.heartbeat", "ts": T0, "gate_id": "G-0001"})
    assert out["ts"] == T0


def test_timestamps_rfc3339_z_and_offsets_agree() -> None:
    assert parse_ts("2026-11-21T00:00:00Z") == parse_ts("2026-11-21T08:00:00+08:00") == 1795219200000


@pytest.mark.parametrize("ts, why", [
    ("yesterday", "is not RFC 3339"),
    ("2026-11-21T08:00:00", "has no UTC offset"),
    (True, "got bool"),
    (4_200_000_000_000, "outside 2000..2100"),
    (12, "outside 2000..2100"),
    ([1], "got list"),
])
def test_unusable_timestamps_are_rejected(ts: object, why: str) -> None:
    assert why in reason("traffic", {**FLOW, "ts": ts})


def test_missing_required_fields_are_named() -> None:
    for field in ("sensor_id", "interval_s", "volume", "speed_kmh", "occupancy", "ts"):
        ev = {k: v for k, v in FLOW.items() if k != field}
        assert field in reason("traffic", ev)


@pytest.mark.parametrize("field, value, why", [
    ("volume", "23", "wrong type: volume must be a number, got str"),
    ("volume", True, "wrong type: volume must be a number, got bool"),
    ("volume", -1, "out of range: volume=-1"),
    ("occupancy", 1.2, "out of range: occupancy=1.2"),
    ("speed_kmh", -3.0, "out of range: speed_kmh"),
    ("sensor_id", 7, "wrong type: sensor_id must be a string"),
    ("sensor_id", "", "out of range: sensor_id"),
    ("sensor_id", "x" * 200, "out of range: sensor_id"),
])
def test_wrong_types_and_physical_ranges(field: str, value: object, why: str) -> None:
    assert why in reason("traffic", {**FLOW, field: value})


def test_implausible_but_possible_values_pass_for_detectors_to_judge() -> None:
    assert validate("traffic", {**FLOW, "speed_kmh": 250.0})["speed_kmh"] == 250.0


def test_gate_enums_and_optional_fields() -> None:
    assert "direction" in reason("gate", {**PASS, "direction": "sideways"})
    assert "method" in reason("gate", {**PASS, "method": "iris"})
    assert "tailgate must be true or false" in reason("gate", {**PASS, "tailgate": "yes"})
    assert "temperature_c" in reason("gate", {**PASS, "temperature_c": 80})
    minimal = {k: v for k, v in PASS.items() if k not in ("temperature_c", "tailgate")}
    assert validate("gate", minimal)["entity"] == "G-0001"


def test_unhashable_and_unencodable_values_are_rejected_not_raised() -> None:
    assert "direction" in reason("gate", {**PASS, "direction": ["in"]})
    assert "breaker" in reason("grid", {**MEASURE, "breaker": {"state": "open"}})
    assert "not valid Unicode" in reason("gate", {**PASS, "subject": "\ud800"})


def test_validated_events_keep_only_contract_fields() -> None:
    out = validate("traffic", {**FLOW, "vendor": 2**70, "note": "\ud800"})
    assert set(out) == set(FLOW) | {"entity"}


def test_grid_optional_breaker_and_power_factor() -> None:
    assert validate("grid", {**MEASURE, "breaker": "open", "power_factor": 0.93})
    assert "breaker" in reason("grid", {**MEASURE, "breaker": "ajar"})
    assert "power_factor" in reason("grid", {**MEASURE, "power_factor": 1.5})
    assert validate("grid", {**MEASURE, "load_kw": -120.0})  # rooftop solar exporting


def test_an_event_of_another_domain_is_rejected() -> None:
    assert "is not a traffic event type" in reason("traffic", PASS)


def test_single_record_and_batch_record() -> None:
    good, bad = decode("traffic", orjson.dumps(FLOW))
    assert len(good) == 1 and bad == []
    good, bad = decode("traffic", orjson.dumps({"events": [FLOW, FLOW, FLOW]}))
    assert len(good) == 3 and bad == []


def test_one_bad_event_in_a_batch_rejects_only_itself() -> None:
    batch = {"events": [FLOW, {**FLOW, "volume": -5}, FLOW, "junk"]}
    good, bad = decode("traffic", orjson.dumps(batch))
    assert len(good) == 2
    assert [(b.index, b.reason.split(":")[0]) for b in bad] == [(1, "out of range"), (3, "wrong type")]
    assert orjson.loads(bad[0].raw)["volume"] == -5


def test_malformed_json_rejects_the_record_with_its_bytes() -> None:
    good, bad = decode("grid", b'{"type": "grid.measurement", ')
    assert good == [] and bad[0].reason.startswith("invalid json") and bad[0].raw.startswith(b'{"type"')


@pytest.mark.parametrize("raw, why", [
    (b"[1, 2]", "event must be a JSON object, got list"),
    (b"42", "event must be a JSON object, got int"),
    (b'{"events": {"a": 1}}', "events must be a JSON array"),
    (b"", "invalid json"),
])
def test_records_of_the_wrong_shape(raw: bytes, why: str) -> None:
    good, bad = decode("grid", raw)
    assert good == [] and why in bad[0].reason


def test_oversized_batch_is_rejected_whole() -> None:
    good, bad = decode("traffic", orjson.dumps({"events": [FLOW] * 11}), max_batch=10)
    assert good == [] and bad[0].reason == "oversized batch: 11 events > 10"


def test_numbers_orjson_refuses_reject_one_event_not_the_batch() -> None:
    flow = orjson.dumps(FLOW).decode()
    raw = ('{"events": [' + flow + ', ' + flow.replace('"volume":23', '"volume":1' + "0" * 30)
           + ', ' + flow.replace('"occupancy":0.18', '"occupancy":NaN') + "]}").encode()
    good, bad = decode("traffic", raw)
    assert len(good) == 1
    assert [b.index for b in bad] == [1, 2] and all("out of range" in b.reason for b in bad)


def test_deadletter_record_carries_reason_origin_and_raw() -> None:
    doc = orjson.loads(deadletter(Reject("missing field: ts", b'{"a":1}', 3), "citybrain.grid.events", 2, 41))
    assert doc == {"reason": "missing field: ts", "topic": "citybrain.grid.events", "partition": 2,
                   "offset": 41, "raw": '{"a":1}', "index": 3}
    binary = orjson.loads(deadletter(Reject("invalid json", b"\xff\xfe"), "t", 0, 0))
    assert base64.b64decode(binary["raw"]) == b"\xff\xfe" and binary["raw_encoding"] == "base64"
