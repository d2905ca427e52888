"""Forecasts where people look (issue 19): a device's figure over the next hour, learnt
from its window history, through the API on the real stack."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from api.forecasts import forecast
from services.config import Settings
from streams.alerting import ms
from streams.windows import NO_READINGS, Agg
from tests.conftest import Api, Proc, event_records, launch_api, produce, wait_for

T0 = 1_795_219_200_000  # 2026-11-21T00:00:00Z, a Saturday
MINUTE, DAY = 60_000, 86_400_000


def passes(minute: int) -> int:
    """A gate's passes per minute: a daily rhythm, busiest at noon."""
    return round(30 + 25 * math.sin(2 * math.pi * (minute % 1440) / 1440 - math.pi / 2))


def gate_window(n: int) -> dict[str, Any]:
    """A closed window of a gate's that counted n passes."""
    return {"closed": True, "agg": Agg(n, {"temperature_c": NO_READINGS}, {"passes": n}, {}, None)}


def gate_windows(minutes: int) -> dict[int, dict[str, Any]]:
    return {T0 + m * MINUTE: gate_window(passes(m)) for m in range(minutes)}


def test_a_daily_rhythm_is_forecast_from_the_history_with_intervals() -> None:
    windows = gate_windows(3 * 1440)
    windows[T0 + 3 * DAY] = {"closed": False, "agg": Agg(0, {"temperature_c": NO_READINGS}, {"passes": 0}, {},
                                                         None)}  # still open: not learnt
    out = forecast("gate", windows, "passes", MINUTE, 60)
    assert (out["learnt"], out["from"], out["through"]) == (3 * 1440, T0, T0 + 3 * DAY - MINUTE)
    assert [p["start"] for p in out["points"]] == [T0 + 3 * DAY + h * MINUTE for h in range(60)]
    for h, p in enumerate(out["points"]):
        assert p["low"] <= p["mean"] <= p["high"]
        assert abs(p["mean"] - passes(3 * 1440 + h)) < 3


def test_a_device_without_history_gets_no_numbers_rather_than_made_up_ones() -> None:
    out = forecast("gate", {}, "passes", MINUTE, 15)
    assert out["learnt"] == 0 and len(out["points"]) == 15
    assert all(p["mean"] is None and p["low"] is None for p in out["points"])


def test_the_forecast_route_answers_for_a_device_and_its_area(settings: Settings, worker: Proc,
                                                             tmp_path: Path) -> None:
    # Ten hours of history kept (the default keeps the entity route's 75 minutes).
    api = launch_api(replace(settings, window_history_min=600), tmp_path)
    try:
        asks(settings, api)
    finally:
        api.proc.stop()


def asks(settings: Settings, api: Api) -> None:
    events = [{"type": "gate.pass", "ts": T0 + m * MINUTE + i * 1000, "gate_id": "G-0001", "direction": "in",
               "method": "face", "result": "granted", "subject": "s-1"}
              for m in range(6 * 60) for i in range(1 + passes(m) // 5)]
    produce(settings, settings.topics.events("gate"), event_records(events, "gate_id"))

    def learnt() -> dict[str, Any] | None:
        r = api.get("/api/v1/forecasts/gate/G-0001", params={"steps": 30})
        return r.json() if r.status_code == 200 and r.json()["learnt"] >= 300 else None
    out = wait_for(learnt, timeout=90, every=1.0)
    assert out["figure"] == "passes" and len(out["points"]) == 30
    assert all(p["low"] <= p["mean"] <= p["high"] for p in out["points"])
    assert api.get("/api/v1/forecasts/gate/G-0001", params={"figure": "volume"}).status_code == 422
    assert api.get("/api/v1/forecasts/bus/B-1").status_code == 404
    area = api.get("/api/v1/forecasts/areas/district/unassigned", params={"domain": "gate"})
    assert area.status_code == 200 and area.json()["learnt"] >= 300
    assert api.get("/api/v1/forecasts/gate/G-0001", token=None).status_code == 401
    # The workers' outlook of the same gate: learnt online over the windows they closed, in
    # 5-minute steps, and forecast 15, 30 and 60 minutes ahead.
    outlook = wait_for(lambda: (api.get("/api/v1/forecasts/gate/G-0001").json()["outlook"] or {}).get(
        "learnt", 0) >= 60 and api.get("/api/v1/forecasts/gate/G-0001").json()["outlook"], timeout=60)
    assert [p["in_s"] for p in outlook["points"]] == [900, 1800, 3600] and outlook["step_ms"] == 300_000
    # made from the last step whose windows have all closed (the stream's last minutes are
    # still within the lateness)
    assert T0 + 6 * 60 * MINUTE - 10 * MINUTE <= ms(outlook["made_at"]) < T0 + 6 * 60 * MINUTE
    # A quarter of a day learnt: no daily profile yet, so near the passes a minute seen.
    assert all(p["low"] < p["mean"] < p["high"] and 1 <= p["mean"] <= 8 for p in outlook["points"]), outlook
    ranked = api.get("/api/v1/forecasts/gate", params={"horizon_s": 1800}).json()
    assert (ranked["total"], ranked["stale"], ranked["devices"][0]["entity"]) == (1, 0, "G-0001")
    assert ranked["devices"][0]["points"] == outlook["points"]
    assert api.get("/api/v1/forecasts/gate", params={"horizon_s": 600}).status_code == 422
    assert api.get("/api/v1/forecasts/gate", params={"figure": "volume"}).status_code == 422
    assert api.get("/api/v1/forecasts/traffic").json()["total"] == 0
    assert api.get("/api/v1/forecasts/water", params={"figure": "passes"}).status_code == 404


def test_a_horizon_not_yet_measured_has_no_interval_rather_than_a_certain_one() -> None:
    counts = [3, 7, 4, 8, 5, 9, 4, 7, 6, 8]
    out = forecast("gate", {T0 + m * MINUTE: gate_window(n) for m, n in enumerate(counts)}, "passes", MINUTE, 30)
    assert out["recent"] == [{"start": T0 + m * MINUTE, "value": n} for m, n in enumerate(counts)]
    assert all(p["low"] < p["mean"] < p["high"] for p in out["points"][:9])  # h-step errors seen for h ≤ 9
    assert all(p["low"] is None and p["high"] is None and p["mean"] is not None for p in out["points"][9:])
