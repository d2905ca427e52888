"""The city's vital signs over the last hours, window by window, beside the same time the
day before: the small charts of the wall screen's tiles.

Read from the rollups topic (each partition's shares of its areas' windows, the city's
among them, kept there two days), keeping of each city share only the few sums, minima
and maxima its vital signs need: two days of windows from 8 partitions take 19 MB
(`python -m benchmarks.read_models`, 2026-11-30). A vital sign is drawn from closed
windows only: an open one is still filling and would dip at the chart's end.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import orjson

from streams.windows import Agg, unpack

DAY_MS = 86_400_000
KEEP_MS = 2 * DAY_MS  # the rollups topic's retention: a day shown, and the day before it

# Per domain: the parts kept of each share, and how shares of one window combine. (A
# field without readings has count and sum 0 and no extremes: min and max are None.)
PARTS: dict[str, tuple[tuple[str, Callable[[Agg], Any], Callable[..., Any]], ...]] = {
    "gate": (("passes", lambda a: a.counters["passes"], sum), ("denied", lambda a: a.counters["denied"], sum),
             ("temp_max", lambda a: a.fields["temperature_c"].max, max)),
    "traffic": (("volume", lambda a: a.fields["volume"].sum, sum),
                ("sxv", lambda a: a.products["speed_x_volume"], sum),
                ("occ_n", lambda a: a.fields["occupancy"].count, sum),
                ("occ_sum", lambda a: a.fields["occupancy"].sum, sum)),
    "grid": (("load_n", lambda a: a.fields["load_kw"].count, sum), ("load_sum", lambda a: a.fields["load_kw"].sum, sum),
             ("load_max", lambda a: a.fields["load_kw"].max, max), ("kv_min", lambda a: a.fields["voltage_kv"].min, min)),
}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


# Per domain: the vital signs, each from one window's combined parts and its length in minutes.
VITALS: dict[str, dict[str, Callable[[dict[str, Any], float], float | None]]] = {
    "gate": {"passes_per_min": lambda p, m: p["passes"] / m, "denied": lambda p, m: p["denied"],
             "max_temperature_c": lambda p, m: p["temp_max"]},
    "traffic": {"speed_kmh_weighted": lambda p, m: _ratio(p["sxv"], p["volume"]),
                "volume_per_min": lambda p, m: p["volume"] / m,
                "occupancy_mean": lambda p, m: _ratio(p["occ_sum"], p["occ_n"])},
    "grid": {"load_kw_mean": lambda p, m: _ratio(p["load_sum"], p["load_n"]),
             "load_kw_max": lambda p, m: p["load_max"], "voltage_kv_min": lambda p, m: p["kv_min"]},
}


def _combine(how: Callable[..., Any], values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return how(present) if present else None


class Share(NamedTuple):
    """What is kept of one partition's share of a city window."""

    closed: bool
    parts: tuple[Any, ...]  # in the order of the domain's PARTS


class CityTrends:
    """Per domain, window start and partition: that partition's `Share` of the window."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.shares: dict[str, dict[int, dict[int, Share]]] = {d: {} for d in PARTS}
        self.newest = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One rollups record; only its city share is kept (a partition's records of one
        window carry it once, in the first). A record that doesn't parse is skipped: a
        chart must not stop the API."""
        if value is None:
            return
        try:
            doc = orjson.loads(value)
            city = doc["levels"].get("city")
            if city is None:
                return
            parts = PARTS[doc["domain"]]
            _, agg = next(unpack(city["cols"]))
            share = Share(bool(doc["closed"]), tuple(pick(agg) for _, pick, _ in parts))
            ws, partition = int(doc["window_start"]), int(doc["partition"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError,
                StopIteration):
            return
        self.shares[doc["domain"]].setdefault(ws, {})[partition] = share
        if ws > self.newest:
            self.newest = ws
            self._forget(ws - KEEP_MS)

    def _forget(self, before: int) -> None:
        for windows in self.shares.values():
            for ws in [ws for ws in windows if ws < before]:
                del windows[ws]

    def _vitals(self, domain: str, ws: int) -> dict[str, float | None] | None:
        by_partition = self.shares[domain].get(ws)
        if not by_partition or not all(share.closed for share in by_partition.values()):
            return None
        parts = {name: _combine(how, [share.parts[i] for share in by_partition.values()])
                 for i, (name, _, how) in enumerate(PARTS[domain])}
        minutes = self.window_ms / 60_000
        out = {}
        for name, vital in VITALS[domain].items():
            try:
                out[name] = vital(parts, minutes)
            except TypeError:  # a part no share had (None)
                out[name] = None
        return out

    def series(self, hours: int) -> dict[str, Any]:
        """The last `hours` of windows up to the newest one seen, per domain and vital sign,
        and the same windows a day earlier (null where the day before isn't held)."""
        end = self.newest
        starts = list(range(end - (hours * 3_600_000 // self.window_ms - 1) * self.window_ms,
                            end + 1, self.window_ms)) if end else []
        domains = {}
        for domain, vitals in VITALS.items():
            now = [self._vitals(domain, ws) for ws in starts]
            before = [self._vitals(domain, ws - DAY_MS) for ws in starts]
            domains[domain] = {
                "series": {v: [w[v] if w else None for w in now] for v in vitals},
                "day_before": {v: [w[v] if w else None for w in before] for v in vitals}}
        return {"window_ms": self.window_ms, "starts": starts, "domains": domains}
