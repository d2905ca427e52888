"""A synthetic city modelled on Qingdao: areas, devices and their registry entities.

The hierarchy is the one a Chinese city brain reports on: district (区) → street
(街道) → community (社区) → grid cell (网格). Districts and streets are real Qingdao
names; communities and grid cells are generated from the street's name, as the real
ones often are. Everything is a pure function of the seed, so a seed names one city.

Devices are placed in grid cells: residential access gates `G-0001…`, road detectors
`T-0001…` and 10 kV distribution feeders `F-0001…`, each as a registry entity of
contract §3. Every gate and detector draws power from the nearest feeder of its district
(`"feeder": "F-0001"`), so a feeder's outage takes them offline (streams/incidents.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# How often each device reports, and how busy an average gate is; the simulator
# produces exactly these cadences, and `City.sized_for` turns them into a city size.
TRAFFIC_INTERVAL_S = 60
GRID_INTERVAL_S = 10
HEARTBEAT_S = 30
MEAN_PASSES_PER_GATE_S = 0.03  # ≈ 2600 passes a day: a community of ~1000 households

# Devices per "unit" of city in `sized_for`: as many detectors as gates, a third as
# many feeders. One unit then produces this many events per second (daily mean).
_UNIT = {"gate": 3, "traffic": 3, "grid": 1}
UNIT_EVENTS_PER_S = (
    _UNIT["gate"] * (1 / HEARTBEAT_S + MEAN_PASSES_PER_GATE_S)
    + _UNIT["traffic"] / TRAFFIC_INTERVAL_S
    + _UNIT["grid"] / GRID_INTERVAL_S
)

# Qingdao's districts: centre (lat, lon), spread in degrees, streets, main roads
# with their free-flow speed. Huangdao and Jimo centres are pulled into the
# 36.0–36.4 N box the service's maps are drawn for.
DISTRICTS: dict[str, tuple[float, float, float, tuple[str, ...], tuple[tuple[str, int], ...]]] = {
    "市南区": (36.066, 120.383, 0.02,
              ("八大关街道", "湛山街道", "香港中路街道", "八大峡街道", "云南路街道",
               "中山路街道", "江苏路街道", "金门路街道", "珠海路街道", "金湖路街道"),
              (("香港中路", 60), ("东海西路", 60), ("南京路", 50), ("山东路", 60), ("延安三路", 50))),
    "市北区": (36.087, 120.375, 0.025,
              ("辽宁路街道", "延安路街道", "登州路街道", "宁夏路街道", "敦化路街道", "浮山新区街道",
               "台东街道", "合肥路街道", "四方街道", "水清沟街道", "洛阳路街道", "河西街道", "兴隆路街道"),
              (("辽宁路", 50), ("重庆南路", 60), ("福州北路", 60), ("杭州路", 50), ("胶州湾高速", 80))),
    "李沧区": (36.150, 120.432, 0.03,
              ("振华路街道", "永清路街道", "永安路街道", "兴华路街道", "浮山路街道", "楼山街道",
               "李村街道", "虎山路街道", "湘潭路街道", "九水街道", "世园街道"),
              (("九水路", 60), ("重庆中路", 80), ("黑龙江中路", 80), ("金水路", 60), ("京口路", 50))),
    "崂山区": (36.107, 120.468, 0.035,
              ("中韩街道", "沙子口街道", "王哥庄街道", "北宅街道", "金家岭街道"),
              (("香港东路", 60), ("海尔路", 60), ("深圳路", 60), ("松岭路", 60), ("株洲路", 50))),
    "城阳区": (36.300, 120.396, 0.045,
              ("城阳街道", "流亭街道", "夏庄街道", "惜福镇街道", "棘洪滩街道", "上马街道",
               "河套街道", "红岛街道"),
              (("正阳路", 60), ("长城路", 60), ("春阳路", 60), ("重庆北路", 80), ("双元路", 60))),
    "黄岛区": (36.025, 120.200, 0.04,
              ("黄岛街道", "辛安街道", "薛家岛街道", "长江路街道", "灵珠山街道", "珠海街道",
               "隐珠街道", "灵山卫街道"),
              (("长江中路", 60), ("江山中路", 60), ("井冈山路", 60), ("嘉陵江路", 60), ("滨海大道", 80))),
    "即墨区": (36.365, 120.447, 0.03,
              ("通济街道", "环秀街道", "潮海街道", "北安街道", "龙山街道", "龙泉街道"),
              (("鹤山路", 50), ("蓝鳌路", 60), ("烟青路", 60), ("振华街", 40), ("天山一路", 60))),
}

# Community names are the street's stem plus one of these, as in 湛山社区, 湛山东社区.
_COMMUNITY_SUFFIXES = ("", "东", "西", "南", "北", "中", "新村", "花园", "嘉园", "海韵")
_RATED_KW = (3000, 4000, 5000, 6000, 8000)
_LAT, _LON = (36.0, 36.4), (120.1, 120.6)

DOMAIN_PREFIX = {"gate": "G", "traffic": "T", "grid": "F"}


@dataclass(frozen=True)
class Cell:
    district: str
    street: str
    community: str
    grid_cell: str
    lat: float
    lon: float


@dataclass
class City:
    """The registry entities of one synthetic city, gates first, then sensors, then feeders."""

    seed: int
    entities: list[dict]
    by_id: dict[str, dict] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {e["id"]: e for e in self.entities}

    def of(self, domain: str) -> list[dict]:
        """The entities of one domain, in id order."""
        return [e for e in self.entities if e["domain"] == domain]

    @property
    def gates(self) -> list[dict]:
        return self.of("gate")

    @property
    def sensors(self) -> list[dict]:
        return self.of("traffic")

    @property
    def feeders(self) -> list[dict]:
        return self.of("grid")

    def periodic_events_per_s(self) -> float:
        """Heartbeats, detector records and feeder measurements: constant, whatever the hour."""
        return (
            len(self.gates) / HEARTBEAT_S
            + len(self.sensors) / TRAFFIC_INTERVAL_S
            + len(self.feeders) / GRID_INTERVAL_S
        )

    @classmethod
    def sized_for(cls, rate: float, seed: int = 7) -> City:
        """A city whose daily-mean event rate is about `rate` events/s.

        One unit of city is 3 gates, 3 detectors and 1 feeder: 0.34 events/s, of
        which 0.25 are periodic telemetry (heartbeats every 30 s, a detector record
        a minute, a feeder measurement every 10 s) and 0.09 are gate passes at their
        daily mean. So 1000 events/s is ~8.8k gates, 8.8k detectors and 2.9k
        feeders. At least 8 of each, so that every anomaly kind finds a device.
        """
        units = max(rate, 0.0) / UNIT_EVENTS_PER_S
        return build_city(
            seed,
            gates=max(8, round(units * _UNIT["gate"])),
            sensors=max(8, round(units * _UNIT["traffic"])),
            feeders=max(8, round(units * _UNIT["grid"])),
        )


def _areas(rng: np.random.Generator) -> list[Cell]:
    """Every grid cell of the city, with a location near its community's and street's."""
    cells: list[Cell] = []
    for district, (lat0, lon0, spread, streets, _roads) in DISTRICTS.items():
        for street in streets:
            stem = street.removesuffix("街道").removesuffix("镇")
            s_lat, s_lon = lat0 + rng.normal(0, spread / 2), lon0 + rng.normal(0, spread / 2)
            n_comm = int(rng.integers(3, 7))
            for suffix in _COMMUNITY_SUFFIXES[:n_comm]:
                community = f"{stem}{suffix}社区"
                c_lat, c_lon = s_lat + rng.normal(0, 0.004), s_lon + rng.normal(0, 0.004)
                for k in range(1, int(rng.integers(2, 6)) + 1):
                    cells.append(Cell(
                        district, street, community, f"{community}第{k}网格",
                        c_lat + rng.normal(0, 0.0015), c_lon + rng.normal(0, 0.0015),
                    ))
    return cells


def _place(rng: np.random.Generator, cell: Cell, domain: str, number: int, name: str) -> dict:
    lat = min(max(cell.lat + float(rng.normal(0, 0.0005)), _LAT[0]), _LAT[1])
    lon = min(max(cell.lon + float(rng.normal(0, 0.0005)), _LON[0]), _LON[1])
    return {
        "id": f"{DOMAIN_PREFIX[domain]}-{number:04d}", "domain": domain, "name": name,
        "district": cell.district, "street": cell.street, "community": cell.community,
        "grid_cell": cell.grid_cell, "lat": round(lat, 6), "lon": round(lon, 6),
    }


def build_city(seed: int, gates: int, sensors: int, feeders: int) -> City:
    """The city of `seed` with this many gates, traffic detectors and feeders.

    The areas depend on the seed alone, so cities of different sizes built from one
    seed share their districts, streets, communities and grid cells.
    """
    cells = _areas(np.random.default_rng(seed))
    rng = np.random.default_rng([seed, gates, sensors, feeders])
    entities: list[dict] = []
    per_community: dict[str, int] = {}
    for n in range(1, gates + 1):
        cell = cells[int(rng.integers(len(cells)))]
        per_community[cell.community] = k = per_community.get(cell.community, 0) + 1
        entities.append(_place(rng, cell, "gate", n, f"{cell.community}{k}号门"))
    for n in range(1, sensors + 1):
        cell = cells[int(rng.integers(len(cells)))]
        road, free_flow = DISTRICTS[cell.district][4][int(rng.integers(5))]
        entity = _place(rng, cell, "traffic", n, f"{road}（{cell.street.removesuffix('街道')}段）检测器{n}")
        entity["free_flow_kmh"] = free_flow
        entities.append(entity)
    for n in range(1, feeders + 1):
        cell = cells[int(rng.integers(len(cells)))]
        entity = _place(rng, cell, "grid", n, f"10kV{cell.street.removesuffix('街道')}{n}号线")
        entity["rated_kw"] = int(_RATED_KW[int(rng.integers(len(_RATED_KW)))])
        entity["nominal_kv"] = 10.0
        entities.append(entity)
    _supply(entities)
    return City(seed, entities)


def _supply(entities: list[dict]) -> None:
    """Each gate and detector names the feeder that powers it: the nearest one of its
    district, or of the city when its district has none."""
    feeders = [e for e in entities if e["domain"] == "grid"]
    if not feeders:
        return
    devices = [e for e in entities if e["domain"] != "grid"]
    where = np.array([(f["lat"], f["lon"]) for f in feeders])
    district = np.array([f["district"] for f in feeders])
    at = np.array([(e["lat"], e["lon"]) for e in devices]).reshape(-1, 2)
    their = np.array([e["district"] for e in devices])
    nearest = np.empty(len(devices), np.int64)
    for d in np.unique(their):
        mine = np.flatnonzero(their == d)
        candidates = np.flatnonzero(district == d)
        if not len(candidates):
            candidates = np.arange(len(feeders))
        nearest[mine] = candidates[_nearest(at[mine], where[candidates])]
    for e, i in zip(devices, nearest.tolist()):
        e["feeder"] = feeders[i]["id"]


def _nearest(points: np.ndarray, sites: np.ndarray) -> np.ndarray:
    """The index of each point's nearest site (the lower index on a tie), as comparing
    every point with every site would find it: comparing every device with every feeder
    took about 7 minutes for a 20,000 events/s city, and this a second or two.

    Sites go into square cells of about two sites each; a point looks at the sites of
    its cell and the eight around it. A site farther out is at least a cell's side away,
    so a point whose nearest found is within that is answered; the rest (none near, or
    farther than a side) are compared with every site."""
    both = np.vstack([sites, points])
    lo, span = both.min(axis=0), float(np.ptp(both, axis=0).max()) or 1.0
    side = span * np.sqrt(2.0 / len(sites))
    width = int(span / side) + 3
    site_cell = ((sites - lo) // side).astype(np.int64) + 1
    key = site_cell[:, 0] * width + site_cell[:, 1]
    order = np.argsort(key, kind="stable")  # within a cell, by site index
    sorted_key = key[order]
    cell = ((points - lo) // side).astype(np.int64) + 1
    best_d = np.full(len(points), np.inf)
    best = np.full(len(points), len(sites), np.int64)
    most = int(np.bincount(key).max())
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            k = (cell[:, 0] + dx) * width + cell[:, 1] + dy
            start, end = np.searchsorted(sorted_key, k), np.searchsorted(sorted_key, k, side="right")
            for j in range(most):
                has = np.flatnonzero(start + j < end)
                if not len(has):
                    break
                i = order[start[has] + j]
                d = ((sites[i] - points[has]) ** 2).sum(axis=1)
                better = (d < best_d[has]) | ((d == best_d[has]) & (i < best[has]))
                best_d[has[better]], best[has[better]] = d[better], i[better]
    rest = np.flatnonzero(best_d > side * side)
    for i in rest.tolist():
        best[i] = int(np.argmin(((sites - points[i]) ** 2).sum(axis=1)))
    return best
