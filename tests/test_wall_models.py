"""The wall screen's read models without a broker: device states from alerts, the
ranking's order, and the city trends built from partitions' shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from api.citymap import Placements, device_states, ranking, snapshot
from api.trends import DAY_MS, CityTrends
from streams.registry import Registry
from streams.windows import SHAPES, Block, Columns


def device(eid: str, street: str, **extra: Any) -> dict[str, Any]:
    return {"id": eid, "domain": "grid", "district": "市南区", "street": street, "community": f"{street}社区",
            "grid_cell": f"{street}社区第1网格", "lat": 36.06, "lon": 120.38, **extra}


def alert(entity: str, street: str, severity: str, rule: str = "grid.overload",
          status: str = "firing") -> dict[str, Any]:
    return {"id": f"{rule}|{entity}", "rule": rule, "entity": entity, "severity": severity, "status": status,
            "area": {"district": "市南区", "street": street, "community": f"{street}社区",
                     "grid_cell": f"{street}社区第1网格"}}


def test_a_silent_device_is_silent_whatever_else_is_open_and_resolved_alerts_count_for_nothing() -> None:
    alerts = [alert("F-1", "A", "minor"), alert("F-1", "A", "major", rule="grid.offline"),
              alert("F-2", "A", "critical"), alert("F-3", "A", "critical", status="resolved")]
    assert device_states(alerts) == {"F-1": "silent", "F-2": "alerting"}


def test_the_worst_area_comes_first_and_devices_without_coordinates_are_counted_not_drawn() -> None:
    registry = Registry([device("F-1", "A"), device("F-2", "B"), device("F-3", "C"),
                         device("F-4", "C", lat=None, lon=None)])
    alerts = [alert("F-1", "A", "minor"), alert("F-1", "A", "minor", rule="grid.low_voltage"),
              alert("F-2", "B", "critical"), alert("F-9", "D", "major")]  # F-9 isn't registered
    rows = ranking(registry, alerts, "street")
    assert [r["id"] for r in rows] == ["B", "D", "A", "C"]  # one critical beats two minors
    assert (rows[0]["worst"], rows[2]["open_alerts"], rows[3]["worst"]) == ("critical", 2, None)
    assert rows[3]["devices"] == 2 and rows[0]["states"] == {"normal": 0, "alerting": 1, "silent": 0}
    inside = ranking(registry, alerts, "community", within=("street", "A"))
    assert [r["id"] for r in inside] == ["A社区"] and inside[0]["path"] == {"district": "市南区", "street": "A"}

    body = snapshot(Placements(registry), alerts)
    assert body["unplaced"] == 1 and len(body["devices"]) == 3
    f2 = next(d for d in body["devices"] if d[0] == "F-2")
    assert body["states"][f2[5]] == "alerting" and body["paths"][f2[4]][1] == "B"


def share(ws: int, partition: int, loads: list[float], closed: bool = True) -> tuple[bytes, bytes]:
    """A partition's rollups record of one window, with its city share."""
    n = len(loads)
    block = Block(SHAPES["grid"], 1)
    block.fold(np.zeros(n, np.int64), Columns([np.array(loads), np.array([10.0, 10.2] * n)[:n] if n > 1 else
                                               np.array([10.0]), np.full(n, 50.0), np.full(n, np.nan)],
                                              [np.zeros(n, bool)], [], None))
    doc = {"domain": "grid", "partition": partition, "window_start": ws, "window_end": ws + 60_000,
           "closed": closed, "levels": {"city": {"areas": ["city"], "cols": block.columns(np.array([0]))}}}
    tag = "closed/0" if closed else "live/1/0"
    return f"grid/{partition}|{ws}|{tag}".encode(), orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def test_trends_add_the_partitions_shares_of_closed_windows_beside_the_day_before() -> None:
    trends = CityTrends(60_000)
    t0 = 1_795_219_200_000
    for key, value in [share(t0 - DAY_MS, 0, [1000.0]), share(t0, 0, [1000.0, 3000.0]), share(t0, 1, [5000.0]),
                       share(t0 + 60_000, 0, [9999.0], closed=False),
                       (b"grid/0|0|closed/0", b"{}"), (b"grid/0|1|closed/0", b"not json")]:
        trends.apply(key, value)
    body = trends.series(hours=1)
    assert len(body["starts"]) == 60 and body["starts"][-1] == t0 + 60_000
    grid = body["domains"]["grid"]
    assert grid["series"]["load_kw_mean"][-2:] == [3000.0, None]  # the open window is left out
    assert grid["series"]["load_kw_max"][-2] == 5000.0 and grid["series"]["voltage_kv_min"][-2] == 10.0
    assert grid["day_before"]["load_kw_mean"][-2] == 1000.0
    assert body["domains"]["gate"]["series"]["passes_per_min"] == [None] * 60
