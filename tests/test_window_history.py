"""The windows read model keeps open windows in memory and closed ones on disk: figures
are the same either way, they survive a restart of the API, and old ones are dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from api.views import Windows
from api.window_history import WindowHistory
from streams.windows import SHAPES, Block, Columns

W = 60_000
T0 = 1_795_219_200_000


def cols(*loads: float) -> dict:
    """One row's columns, as a worker's window record carries them."""
    n = len(loads)
    block = Block(SHAPES["grid"], 1)
    block.fold(np.zeros(n, np.int64), Columns(
        [np.array(loads), np.full(n, 10.0), np.full(n, 50.0), np.full(n, 0.95)], [np.zeros(n, bool)], [], None))
    return block.columns(np.array([0]))


def record(partition: int, ws: int, closed: bool, rows: dict) -> bytes:
    return orjson.dumps({"domain": "grid", "partition": partition, "window_start": ws, "window_end": ws + W,
                         "closed": closed, **rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def aggregate(entity: str, ws: int, closed: bool, *loads: float) -> bytes:
    return record(0, ws, closed, {"entities": [entity], "cols": cols(*loads)})


def rollup(partition: int, ws: int, closed: bool, *loads: float) -> bytes:
    return record(partition, ws, closed, {"levels": {"district": {"areas": ["shinan"], "cols": cols(*loads)}}})


def model(path: Path, retention_ms: int = 10 * W) -> Windows:
    return Windows(WindowHistory(path / "windows.sqlite3", retention_ms))


def test_closed_windows_leave_memory_and_survive_a_restart(tmp_path: Path) -> None:
    windows = model(tmp_path)
    windows.apply_aggregate(None, aggregate("F-1", T0, False, 100.0))
    windows.apply_aggregate(None, aggregate("F-1", T0, True, 100.0, 300.0))
    windows.apply_aggregate(None, aggregate("F-1", T0 + W, False, 50.0))
    windows.flush()
    assert list(windows.open["e/grid/F-1"]) == [T0 + W]  # only the open window in memory
    got = windows.entity("grid", "F-1")
    assert sorted(got) == [T0, T0 + W]
    assert got[T0]["closed"] and got[T0]["agg"].events == 2 and not got[T0 + W]["closed"]
    windows.history.close()

    again = model(tmp_path)  # a restarted API, before it has read the topic
    assert again.entity("grid", "F-1") == {T0: got[T0]}


def test_an_area_adds_closed_and_open_shares_of_its_partitions(tmp_path: Path) -> None:
    windows = model(tmp_path)
    windows.apply_rollup(None, rollup(0, T0, True, 100.0))
    windows.apply_rollup(None, rollup(1, T0, False, 200.0, 300.0))
    windows.flush()
    area = windows.area("grid", "district", "shinan")
    assert area[T0]["agg"].events == 3 and not area[T0]["closed"]
    windows.apply_rollup(None, rollup(1, T0, True, 200.0, 300.0))
    windows.flush()
    assert windows.area("grid", "district", "shinan")[T0]["closed"]
    assert windows.open == {}
    summary = windows.summary("grid", "district", "shinan", W)
    assert summary is not None and summary["figures"]["events"] == 3


def test_windows_older_than_the_retention_are_dropped(tmp_path: Path) -> None:
    windows = model(tmp_path, retention_ms=5 * W)
    for i in range(20):
        windows.apply_aggregate(None, aggregate("F-1", T0 + i * W, True, float(i)))
    windows.flush()
    assert sorted(windows.entity("grid", "F-1")) == [T0 + i * W for i in range(15, 20)]
    rows = windows.history.db.execute("SELECT count(*) FROM windows2").fetchone()[0]
    assert rows == 5  # deleted on disk too, not only hidden


# A row as the versions before named aggregates wrote it (a feeder's closed window: two
# readings, one of them with the breaker open, and no power factor).
OLD_ROW = (b'{"window_end":1795219260000,"closed":true,"agg":{"n":2,"f":{"load_kw":[2,400.0,20000.0,100.0,300.0],'
           b'"voltage_kv":[2,20.0,0.5,9.5,10.5],"frequency_hz":[2,100.0,0.0,50.0,50.0],'
           b'"power_factor":[0,0.0,0.0,null,null]},"c":{"breaker_open":1},"p":{},"s":[1795219200005,"open"]}}')


def test_rows_an_earlier_version_stored_read_as_they_were_and_are_written_alike(tmp_path: Path) -> None:
    history = WindowHistory(tmp_path / "windows.sqlite3", 10 * W)
    history.db.execute("INSERT INTO windows2 VALUES (?, ?, ?, ?)", ("e/grid/F-1", T0, 0, OLD_ROW))
    history.newest = T0
    window = model(tmp_path).entity("grid", "F-1")[T0]
    figures = window["agg"].figures("grid")
    assert (figures["events"], figures["load_kw_mean"], figures["breaker"], figures["breaker_open"]) == (2, 200.0, "open", 1)
    assert figures["fields"]["load_kw"]["variance"] == 10000.0 and figures["fields"]["power_factor"]["mean"] is None
    history.add("e/grid/F-2", T0, 0, {"window_end": window["window_end"], "closed": True, "agg": window["agg"]})
    history.flush()
    assert history.db.execute("SELECT doc FROM windows2 WHERE series = 'e/grid/F-2'").fetchone()[0] == OLD_ROW
    history.close()
