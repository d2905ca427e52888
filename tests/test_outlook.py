"""The outlook: every device series forecast 15, 30 and 60 minutes ahead in the workers,
from the closed windows (streams/outlook.py). Broker-free."""

from __future__ import annotations

import numpy as np
import orjson

from streams import outlook
from streams.early_warning import EarlyWarning, decode, encode
from streams.outlook import STEP_MS, Outlook
from streams.processor import Record
from streams.registry import Registry
from streams.rules import RuleBook
from tests.test_early_warning import FEEDERS as FEEDERS_RATED
from tests.test_early_warning import MIN_MS, T0, loads, window_records


def step_records(rule: EarlyWarning, records: list[Record]) -> tuple[object, list[dict]]:
    state = rule.new()
    out = rule.step(state, records)
    return state, [orjson.loads(v) for _, v in out.forecasts]


def closed(domain: str, ws: int, entities: list[str], cols: dict) -> dict:
    return {"domain": domain, "ws": ws, "entities": entities, "cols": cols}


def test_a_step_is_learnt_when_its_last_window_closes_as_its_pooled_mean_or_total_per_window() -> None:
    series = Outlook(MIN_MS)
    load = {"n": [2], "f": {"load_kw": {"count": [2], "sum": [200.0], "m2": [0.0], "min": [90.0], "max": [110.0]}}}
    busy = {"n": [4], "f": {"load_kw": {"count": [4], "sum": [800.0], "m2": [0.0], "min": [190.0], "max": [210.0]}}}
    for m, cols in enumerate([load, load, busy, load]):
        assert series.add("grid", T0 + m * MIN_MS, ["F-1"], cols) is None
    learnt = series.add("grid", T0 + 4 * MIN_MS, ["F-1"], load)  # one 5-minute step: 1,600 kW over 12 readings
    model = series.domains["grid"].model
    assert learnt is not None and learnt.slots.tolist() == [0]
    assert model.state["last_step"][0] == T0 // STEP_MS and model.state["level"][0] == 1600 / 12
    assert series.add("grid", T0 + STEP_MS, ["F-1"], load) is None  # the next step: not learnt twice
    # A gate's passes: the step's total per window, a minute without a window counting as
    # none; without a window in its last minute, the step is learnt with the next step's first.
    gates = Outlook(MIN_MS)
    for m in (0, 1, 3):
        assert gates.add("gate", T0 + m * MIN_MS, ["G-1"], {"n": [5], "f": {}, "c": {"passes": [5]}}) is None
    assert gates.add("gate", T0 + STEP_MS, ["G-1"], {"n": [5], "f": {}, "c": {"passes": [5]}}) is not None
    assert gates.domains["gate"].model.state["level"][0] == 15 / 5


def test_a_window_seen_again_adds_nothing_and_a_replay_from_a_snapshot_publishes_what_the_first_run_did() -> None:
    rule = EarlyWarning(RuleBook(), Registry(), MIN_MS)
    records = window_records({f: v[:600] for f, v in loads().items()})
    whole = rule.new()
    expected = rule.step(whole, records).forecasts
    assert len(expected) == 600 // 5  # a record per step, learnt as its last window closes

    # Stopped after 347 records, stored, and the records from 300 on read again (a crash
    # replays what the snapshot does not cover; a domain worker may resend a window).
    first = rule.new()
    before = rule.step(first, records[:347]).forecasts
    again = decode(encode(first), MIN_MS)
    repeated = [Record(0, 10_000 + i, r.key, r.value) for i, r in enumerate(records[300:310])]
    after = rule.step(again, records[300:] + repeated).forecasts
    assert before + after == expected
    assert outlook.encode(again.ahead) == outlook.encode(whole.ahead)


def test_forecasts_never_look_ahead() -> None:
    """Rewriting the future leaves every forecast published before it unchanged."""
    rule = EarlyWarning(RuleBook(), Registry(), MIN_MS)
    series = {f: v[:900] for f, v in loads().items()}
    rewritten = {f: np.concatenate([v[:600], v[600:] * 3 + 50]) for f, v in series.items()}
    _, real = step_records(rule, window_records(series))
    _, other = step_records(rule, window_records(rewritten))
    made = [r["made_at"][0] for r in real]
    cut = made.index(T0 + 600 * MIN_MS)  # forecasts made from the first 600 minutes
    assert real[:cut + 1] == other[:cut + 1] and real[cut + 1:] != other[cut + 1:]


def test_a_record_holds_each_learnt_series_at_15_30_and_60_minutes_with_intervals_once_measured() -> None:
    rule = EarlyWarning(RuleBook(), Registry(), MIN_MS)
    _, docs = step_records(rule, window_records({f: v[:2 * 1440] for f, v in loads().items()}))
    first, last = docs[0], docs[-1]
    assert (first["domain"], first["step_ms"], first["horizons_s"]) == ("grid", STEP_MS, [900, 1800, 3600])
    assert first["figures"] == ["load_kw_mean", "load_kw_mean"] and first["entities"] == ["F-RAMP", "F-FLAT"]
    assert first["made_at"] == [T0 + STEP_MS] * 2 and first["learnt"] == [1, 1]
    assert first["low"] == [[None] * 3] * 2  # no error measured yet: no interval, rather than a zero-wide one
    assert last["learnt"] == [2 * 288] * 2 and last["made_at"] == [T0 + 2 * 288 * STEP_MS] * 2
    actual = loads()
    for feeder, mean, low, high in zip(last["entities"], last["mean"], last["low"], last["high"]):
        # The load of the 5 minutes ending 15, 30 and 60 minutes after the forecast was made.
        ends = [(last["made_at"][0] - T0) // MIN_MS + h for h in (15, 30, 60)]
        came = [actual[feeder][end - 5:end].mean() for end in ends]
        assert all(lo < m < hi for m, lo, hi in zip(mean, low, high))
        assert all(abs(m - c) < 0.03 * c for m, c in zip(mean, came)), (mean, came)


def test_a_state_stored_before_the_outlook_is_read_and_the_outlook_starts_anew() -> None:
    rule = EarlyWarning(RuleBook(), Registry(), MIN_MS)
    state = rule.new()
    rule.step(state, window_records({f: v[:100] for f, v in loads().items()}))
    payload = b"".join(encode(state))
    size = int.from_bytes(payload[:8], "big")
    header = orjson.loads(payload[8:8 + size])
    header["layout"] = 2
    del header["outlook_bytes"]
    old = orjson.dumps(header)
    models = sum(m["bytes"] for m in header["models"])
    stored = len(old).to_bytes(8, "big") + old + payload[8 + size:8 + size + models]
    again = decode([stored], MIN_MS)
    assert again.offset == state.offset and again.ahead is not None and again.ahead.domains == {}


def test_a_window_that_does_not_divide_the_step_turns_the_outlook_off_not_early_warning() -> None:
    rule = EarlyWarning(RuleBook(), Registry(), 8 * MIN_MS)
    state = rule.new()
    assert state.ahead is None
    assert rule.load(encode(state)).ahead is None


def test_a_city_that_turns_the_outlook_off_keeps_early_warning_and_drops_a_stored_outlook() -> None:
    records = window_records({f: v[:100] for f, v in loads().items()})
    on = EarlyWarning(RuleBook(), Registry(), MIN_MS)
    state = on.new()
    on.step(state, records)
    off = EarlyWarning(RuleBook(), Registry(), MIN_MS, ahead=False)
    loaded = off.load(encode(state))
    assert loaded.ahead is None and loaded.offset == state.offset
    assert off.step(loaded, [Record(0, 1_000 + i, r.key, r.value) for i, r in enumerate(records)]).forecasts == []
    assert on.load(encode(loaded)).ahead.domains == {}  # turned on again: it starts anew


def test_the_newest_record_of_each_key_holds_every_series_as_compaction_keeps_only_it() -> None:
    """A closed window too big for one record comes in several, and a series whose step's
    last window is missing learns that step late, in a record of its own: the topic keeps
    each key's newest record only, and still has every series' latest forecast."""
    gates = [f"G-{n:04d}" for n in range(2_600)]
    rule, kept, latest = EarlyWarning(RuleBook(), Registry(), MIN_MS), {}, {}
    state, offset = rule.new(), 0
    for m in range(12):
        ws = T0 + m * MIN_MS
        quiet = {g for n, g in enumerate(gates) if (n + m) % 7 == 0}  # no passes that minute: no window
        sending = [g for g in gates if g not in quiet]
        for chunk in range(0, len(sending), 2_000):
            ids = sending[chunk:chunk + 2_000]
            doc = {"domain": "gate", "partition": 0, "window_start": ws, "window_end": ws + MIN_MS, "closed": True,
                   "entities": ids, "cols": {"n": [3] * len(ids), "f": {}, "c": {"passes": [3] * len(ids)}}}
            record = Record(0, offset, f"gate/0|{ws}|closed/{chunk // 2_000}".encode(), orjson.dumps(doc))
            offset += 1
            for key, value in rule.step(state, [record]).forecasts:
                kept[key] = value  # compaction
                doc = orjson.loads(value)
                latest.update({e: t for e, t in zip(doc["entities"], doc["made_at"])})
    survived = {}
    for value in kept.values():
        doc = orjson.loads(value)
        survived.update({e: t for e, t in zip(doc["entities"], doc["made_at"])})
    assert len(latest) == len(gates) and survived == latest


def test_a_stored_outlook_that_cannot_be_read_or_is_of_another_window_starts_anew_and_early_warning_goes_on() -> None:
    rule = EarlyWarning(RuleBook(), Registry(FEEDERS_RATED), MIN_MS)
    state = rule.new()
    rule.step(state, window_records({f: v[:1500] for f, v in loads().items()}))
    assert state.models and state.ahead.domains
    payload = b"".join(encode(state))
    spoilt = payload[:-8]  # the outlook cut short
    for stored, window_ms in (([spoilt], MIN_MS), (encode(state), MIN_MS // 2)):
        again = EarlyWarning(RuleBook(), Registry(FEEDERS_RATED), window_ms).load(stored)
        assert again.ahead is not None and again.ahead.domains == {} and again.ahead.window_ms == window_ms
        assert again.models["smooth"].state["seen"].tolist() == state.models["smooth"].state["seen"].tolist()


def test_a_total_without_any_reading_learns_nothing() -> None:
    series = Outlook(MIN_MS)
    for m in range(5):
        series.add("gate", T0 + m * MIN_MS, ["G-1"], {"n": [0], "f": {}, "c": {}})  # a shape without passes
    assert series.domains["gate"].model.state["seen"].tolist() == [0]


def test_a_series_without_a_window_in_its_steps_last_minute_learns_it_with_the_partitions_next_step() -> None:
    """A detector that reports every few minutes: its step is learnt as soon as any window
    of the partition's next step closes, with every such series at once."""
    series, published = Outlook(MIN_MS), []
    for m in range(20):
        ids = ["T-EVERY-MINUTE"] + (["T-SOMETIMES"] if m % 5 in (0, 2) else [])
        cols = {"n": [1] * len(ids), "f": {name: {"count": [1] * len(ids), "sum": [10.0] * len(ids),
                                                   "m2": [0.0] * len(ids), "min": [10.0] * len(ids),
                                                   "max": [10.0] * len(ids)}
                                            for name in ("volume", "speed_kmh", "occupancy")}, "c": {}}
        learnt = series.add("traffic", T0 + m * MIN_MS, ids, cols)
        published.append(sorted(series.domains["traffic"].series.ids[s] for s in learnt.slots) if learnt else [])
    assert published[4] == ["occupancy_mean|T-EVERY-MINUTE", "speed_kmh_mean|T-EVERY-MINUTE",
                            "volume|T-EVERY-MINUTE"]  # the step's last minute: the series that sent one
    assert published[5] == ["occupancy_mean|T-SOMETIMES", "speed_kmh_mean|T-SOMETIMES", "volume|T-SOMETIMES"]
    assert [m for m, p in enumerate(published) if p] == [4, 5, 9, 10, 14, 15, 19]
    model = series.domains["traffic"].model
    # a total per window of the step: two windows of 10 in five minutes
    assert model.state["level"][series.domains["traffic"].series.slot["volume|T-SOMETIMES"]] == 4.0
