"""The city simulator: contract events with realistic daily shapes and labelled anomalies.

Three layers:

- pure daily shapes (`gate_activity`, `traffic_demand`, `grid_load`, …) of the hour of
  day in Asia/Shanghai;
- `Simulator`, a deterministic generator: for one city and seed, `tick(t)` gives every
  event of simulated second `t`, with anomalies of every rule kind (`KINDS`) injected
  on a plan and reported as ground truth;
- `run_simulator`, a thin aiokafka shell that publishes the registry and then the
  events, live (event time = wall clock, steady rate) or fast (a simulated span, as
  fast as the broker takes it).

Devices report on staggered phases (a detector's minute starts at its own second),
so the periodic telemetry is the same every second rather than a burst each minute.
Each device speaks one timestamp form, RFC 3339 with +08:00 or epoch milliseconds, as
devices from different vendors do; both forms occur in every domain.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from services.city import (
    GRID_INTERVAL_S,
    HEARTBEAT_S,
    MEAN_PASSES_PER_GATE_S,
    TRAFFIC_INTERVAL_S,
    City,
)
from streams.kafka_security import client_options
from streams.partitioning import partition_for
from streams.topics import DOMAINS, Topics

ENTITY_FIELD = {"gate": "gate_id", "traffic": "sensor_id", "grid": "feeder_id"}
METHODS = ("face", "card", "plate", "password", "qr")
_QR = METHODS.index("qr")
_FACE = METHODS.index("face")
_RESIDENT_METHOD_SHARE = np.array([0.60, 0.20, 0.16, 0.04])
_RESIDENTS_PER_GATE = 64
_UTC8 = 8 * 3600


# ---------------------------------------------------------------- daily shapes

def local_hour(t: float) -> float:
    """Hour of day in Asia/Shanghai (UTC+8, no DST) of epoch second `t`."""
    return ((t + _UTC8) % 86400) / 3600


def _bump(h, mu: float, sigma: float):
    """A bell around hour `mu` that wraps across midnight."""
    d = (h - mu + 12) % 24 - 12
    return np.exp(-0.5 * (d / sigma) ** 2)


def _gate_shape(h):
    return (0.05 + 1.5 * _bump(h, 7.6, 0.9) + 0.6 * _bump(h, 12.0, 1.5) + 0.5 * _bump(h, 15.0, 2.5)
            + 1.3 * _bump(h, 18.3, 1.2) + 0.7 * _bump(h, 20.5, 1.5))


_GATE_MEAN = float(np.mean(_gate_shape(np.arange(0, 24, 1 / 60))))


def gate_activity(h: float) -> float:
    """Passes relative to the daily mean: school and work run at 7–8, home at 18–21, quiet at night."""
    return float(_gate_shape(h)) / _GATE_MEAN


def out_share(h: float) -> float:
    """Share of passes going out: most leave in the morning, most come home in the evening."""
    return float(0.5 + 0.32 * _bump(h, 7.5, 1.2) - 0.3 * _bump(h, 18.5, 1.5))


def visitor_share(h: float) -> float:
    """Share of passes by visitors with a QR code: couriers, guests and workers by day."""
    return float(0.02 + 0.15 * _bump(h, 14.0, 3.0))


def traffic_demand(h: float) -> float:
    """Road demand in [0, 1]: saturated in the 8:00 and 18:00 rush, light at night."""
    return float(min(1.0, 0.04 + 0.96 * _bump(h, 8.0, 1.0) + 0.9 * _bump(h, 18.0, 1.3)
                     + 0.5 * _bump(h, 13.0, 3.0)))


def grid_load(h: float) -> float:
    """Feeder load as a fraction of rated: night trough ~0.40, lunch ~0.72, evening ~0.81."""
    return float(0.40 + 0.10 * _bump(h, 9.0, 2.0) + 0.24 * _bump(h, 12.2, 1.2)
                 + 0.12 * _bump(h, 15.5, 2.5) + 0.38 * _bump(h, 19.8, 1.8))


# ---------------------------------------------------------------- anomalies

# Every rule kind with the length of its episode, in the order they are injected:
# the long ones first, so that a 30-minute run after its warm-up fits all of them.
KINDS: tuple[tuple[str, int], ...] = (
    ("traffic.anomaly", 900), ("grid.load_anomaly", 900), ("gate.crowd_surge", 600),
    ("gate.offline", 600), ("grid.offline", 600), ("traffic.offline", 600), ("traffic.sensor_fault", 720),
    ("traffic.congestion", 480), ("grid.overload", 420), ("grid.outage", 300),
    ("traffic.incident", 240), ("grid.voltage", 180), ("gate.denied_burst", 100),
    ("grid.frequency", 90), ("gate.tailgating", 60), ("gate.fever", 1),
)
# Rules whose detectors judge an event against a fixed limit, needing nothing learned:
# these are injected from the first second, so a new user sees alerts within a minute;
# the others wait for the warm-up, while detectors learn what is normal.
NO_BASELINE = frozenset({"gate.fever", "gate.tailgating", "grid.outage", "grid.voltage", "grid.frequency"})
# Quiet time on an entity between two of its episodes, so each is a separate one
# and the detector's baseline has settled again.
GUARD_S = 900
# Seconds between the extra passes of the gate episodes made of single passes.
_PASS_STEP = {"gate.fever": 1, "gate.tailgating": 25, "gate.denied_burst": 10}


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass(frozen=True)
class Anomaly:
    """One injected episode on one entity over [start_s, end_s) in epoch seconds.

    `level` is the rule's magnitude (a factor of normal, a speed, a frequency …) and
    `variant` the form it takes where a rule has several.
    """

    rule: str
    entity: str
    index: int  # the entity's position among its domain's entities
    start_s: int
    end_s: int
    level: float = 0.0
    variant: str = ""

    @property
    def domain(self) -> str:
        return self.rule.partition(".")[0]

    def truth(self) -> dict:
        """The ground-truth line: rule, domain, entity, start/end in RFC 3339 UTC and epoch ms."""
        return {
            "rule": self.rule, "domain": self.domain, "entity": self.entity,
            "start": _utc(self.start_s), "end": _utc(self.end_s),
            "start_ms": self.start_s * 1000, "end_ms": self.end_s * 1000,
        }


# ---------------------------------------------------------------- the generator

@dataclass
class Tick:
    """The events of one simulated second, by domain, and the anomalies that began in it."""

    events: dict[str, list[dict]]
    began: list[Anomaly] = field(default_factory=list)


def _phases(rng: np.random.Generator, n: int, period: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Each device's reporting second within its period, the devices of each second, and
    each device's position among them."""
    phase = rng.integers(0, period, n)
    groups = [np.flatnonzero(phase == k) for k in range(period)]
    position = np.empty(n, dtype=np.int64)
    for g in groups:
        position[g] = np.arange(len(g))
    return phase, groups, position


class Simulator:
    """The events of one city, second by second, from `start_s` (epoch seconds).

    Deterministic: a city, a seed, the same arguments and the same sequence of
    `tick` calls give the same events. `end_s` bounds the anomaly plan (an episode
    is only begun if it ends by then); None plans forever. `anomaly_every_s` is the
    mean time between two injected anomalies (None: no anomalies), the first at
    `start_s`: those of `NO_BASELINE` from then on, the others after `warmup_s`. With `steady_rate`, gate passes are scaled so the city produces that
    many events/s at every hour; their direction and method mix still follow the day.
    """

    def __init__(self, city: City, start_s: int, end_s: int | None = None, seed: int = 7,
                 anomaly_every_s: float | None = 30.0, warmup_s: int = 300,
                 steady_rate: float | None = None) -> None:
        self.rng = np.random.default_rng([seed, 0])
        rng = np.random.default_rng([seed, 1])  # device traits, apart from the event noise
        self._ids = {d: [e["id"] for e in city.of(d)] for d in DOMAINS}
        # What each feeder powers (services/city.py): its outage takes them offline.
        self._powers = {d: {} for d in ("gate", "traffic")}
        for d, powered in self._powers.items():
            for i, e in enumerate(city.of(d)):
                powered.setdefault(e.get("feeder"), []).append(i)
        # Per domain: whether each device stamps epoch ms rather than RFC 3339.
        self._ms_form = {d: (rng.random(len(ids)) < 0.5).tolist() for d, ids in self._ids.items()}

        n = len(self._ids["gate"])
        weight = rng.lognormal(0.0, 0.6, n)
        self._gate_p = weight / weight.sum()
        self._gate_cum = np.cumsum(self._gate_p)
        self._thermal = rng.random(n) < 0.4  # a face terminal with a thermal camera
        self._tailgate_sensor = rng.random(n) < 0.5
        self._residents = rng.integers(0, 1 << 32, (n, _RESIDENTS_PER_GATE), dtype=np.uint64)
        _, self._hb_groups, _ = _phases(rng, n, HEARTBEAT_S)
        self._steady_passes = (None if steady_rate is None
                               else max(steady_rate - city.periodic_events_per_s(), 0.0))

        sensors = city.sensors
        self._free_flow = np.array([e["free_flow_kmh"] for e in sensors], dtype=float)
        self._capacity = rng.choice([20.0, 40.0, 60.0], len(sensors))  # vehicles/min: 1–3 lanes
        self._busyness = rng.uniform(0.75, 1.1, len(sensors))
        self._tr_phase, self._tr_groups, self._tr_pos = _phases(rng, len(sensors), TRAFFIC_INTERVAL_S)

        feeders = city.feeders
        self._rated = np.array([e["rated_kw"] for e in feeders], dtype=float)
        self._nominal = np.array([e["nominal_kv"] for e in feeders], dtype=float)
        self._load_scale = rng.uniform(0.9, 1.05, len(feeders))
        self._pf_meter = (rng.random(len(feeders)) < 0.5).tolist()
        self._gr_phase, self._gr_groups, self._gr_pos = _phases(rng, len(feeders), GRID_INTERVAL_S)

        self._active: list[Anomaly] = []
        self._plan = (iter(()) if anomaly_every_s is None
                      else self._planner(np.random.default_rng([seed, 2]), start_s, start_s + warmup_s,
                                         end_s, anomaly_every_s))
        self._next = next(self._plan, None)

    # -------------------------------------------------------- anomaly plan

    def _planner(self, rng: np.random.Generator, first_s: int, learned_s: int, end_s: int | None,
                 every_s: float) -> Iterator[Anomaly]:
        """Anomalies in start order, cycling through `KINDS`; a kind that needs a baseline
        before `learned_s`, has no free entity or would not end by `end_s` is passed over
        for the next one."""
        free_from = {d: np.full(len(ids), -np.inf) for d, ids in self._ids.items()}
        slot, cursor = first_s, 0
        while end_s is None or slot < end_s:
            for i in range(len(KINDS)):
                rule, duration = KINDS[(cursor + i) % len(KINDS)]
                if slot < learned_s and rule not in NO_BASELINE:
                    continue
                domain = rule.partition(".")[0]
                eligible = free_from[domain] <= slot
                if rule == "gate.fever":
                    eligible &= self._thermal
                elif rule == "gate.tailgating":
                    eligible &= self._tailgate_sensor
                candidates = np.flatnonzero(eligible)
                if (end_s is not None and slot + duration > end_s) or not len(candidates):
                    continue
                index = int(rng.choice(candidates))
                anomaly = self._shape(rng, rule, index, slot, slot + duration)
                free_from[domain][index] = anomaly.end_s + GUARD_S
                cursor = (cursor + i + 1) % len(KINDS)
                yield anomaly
                if rule == "grid.outage" and slot >= first_s + 2 * HEARTBEAT_S:
                    # What the feeder powers goes dark with it, except devices busy with an
                    # episode of their own: gate.offline and traffic.offline episodes in the
                    # ground truth. Not in the first minute: a device never heard from
                    # can't be missed.
                    for d, powered in self._powers.items():
                        dark = [i for i in powered.get(anomaly.entity, []) if free_from[d][i] <= slot]
                        free_from[d][dark] = anomaly.end_s + GUARD_S
                        for i in dark:
                            yield Anomaly(f"{d}.offline", self._ids[d][i], i, slot, anomaly.end_s)
                break
            slot += int(round(every_s * rng.uniform(0.75, 1.25)))

    def _shape(self, rng: np.random.Generator, rule: str, index: int, start: int, end: int) -> Anomaly:
        """Draw the magnitude and form of one episode."""
        level, variant = 0.0, ""
        if rule == "gate.fever":
            level = round(float(rng.uniform(37.6, 38.8)), 1)
        elif rule == "gate.denied_burst":
            variant = f"{int(rng.integers(0, 1 << 32)):08x}"  # the subject trying again and again
        elif rule == "gate.crowd_surge":
            level = float(rng.uniform(5.0, 6.0))
        elif rule == "traffic.congestion":
            level = float(rng.uniform(0.18, 0.26))
        elif rule == "traffic.incident":
            level = float(rng.uniform(3.0, 8.0))
        elif rule == "traffic.anomaly":
            level = float(rng.uniform(3.5, 4.5))
        elif rule == "traffic.sensor_fault":
            variant = str(rng.choice(["flatline", "zeros", "impossible"]))
        elif rule == "grid.overload":
            level = float(rng.uniform(1.08, 1.30))
        elif rule == "grid.voltage":
            variant = str(rng.choice(["low", "high"]))
            level = float(rng.uniform(0.885, 0.91) if variant == "low" else rng.uniform(1.085, 1.10))
        elif rule == "grid.frequency":
            variant = str(rng.choice(["low", "high"]))
            level = float(rng.uniform(49.60, 49.72) if variant == "low" else rng.uniform(50.28, 50.40))
        elif rule == "grid.load_anomaly":
            # A surge where 1.8× normal stays clearly below rated, a collapse otherwise.
            normal = grid_load(local_hour(start)) * self._load_scale[index]
            variant, level = ("surge", 1.8) if normal * 1.8 <= 0.95 else ("drop", 0.15)
        domain = rule.partition(".")[0]
        return Anomaly(rule, self._ids[domain][index], index, start, end, level, variant)

    # -------------------------------------------------------- ticks

    def tick(self, t: int) -> Tick:
        """Every event of simulated second `t` (epoch seconds); call with increasing `t`."""
        began = []
        while self._next is not None and self._next.start_s <= t:
            began.append(self._next)
            self._active.append(self._next)
            self._next = next(self._plan, None)
        self._active = [a for a in self._active if a.end_s > t]

        h = local_hour(t)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + _UTC8))
        active = {d: [a for a in self._active if a.domain == d] for d in DOMAINS}
        return Tick({
            "gate": self._gate_events(t, h, stamp, active["gate"]),
            "traffic": self._traffic_events(t, h, stamp, active["traffic"]),
            "grid": self._grid_events(t, h, stamp, active["grid"]),
        }, began)

    def _gate_events(self, t: int, h: float, stamp: str, active: list[Anomaly]) -> list[dict]:
        rng, ids, ms_form = self.rng, self._ids["gate"], self._ms_form["gate"]
        offline = {a.index for a in active if a.rule == "gate.offline"}
        events = [
            {"type": "gate.heartbeat", "ts": t * 1000 if ms_form[g] else f"{stamp}+08:00", "gate_id": ids[g]}
            for g in self._hb_groups[t % HEARTBEAT_S].tolist() if g not in offline
        ]
        total = (MEAN_PASSES_PER_GATE_S * len(ids) * gate_activity(h) if self._steady_passes is None
                 else self._steady_passes)
        gates = np.minimum(np.searchsorted(self._gate_cum, rng.random(rng.poisson(total)), side="right"),
                           len(ids) - 1)
        if offline:
            gates = gates[~np.isin(gates, list(offline))]
        events += self._passes(gates, t, h, stamp, out_share(h))

        for a in active:
            if a.rule == "gate.crowd_surge":
                # At least one extra pass every 2 s, so a surge shows at night too.
                extra = max((a.level - 1) * total * self._gate_p[a.index], 0.5)
                events += self._passes(np.full(rng.poisson(extra), a.index), t, h, stamp, 0.15)
            elif a.rule in _PASS_STEP and (t - a.start_s) % _PASS_STEP[a.rule] == 0:
                (ev,) = self._passes(np.array([a.index]), t, h, stamp, 0.0)
                ev["result"] = "granted"
                if a.rule == "gate.fever":
                    ev["method"], ev["temperature_c"] = "face", a.level
                elif a.rule == "gate.tailgating":
                    ev["tailgate"] = True
                else:
                    ev["result"], ev["subject"] = "denied", a.variant
                    ev["method"] = ev["method"] if ev["method"] != "qr" else "face"
                events.append(ev)
        return events

    def _passes(self, gates: np.ndarray, t: int, h: float, stamp: str, share_out: float) -> list[dict]:
        """Ordinary passes at these gates (one per entry) during second `t`."""
        rng, n = self.rng, len(gates)
        if not n:
            return []
        ids, ms_form = self._ids["gate"], self._ms_form["gate"]
        visitors = visitor_share(h)
        probs = np.append(_RESIDENT_METHOD_SHARE * (1 - visitors), visitors)
        method = np.minimum(np.searchsorted(np.cumsum(probs), rng.random(n), side="right"), len(METHODS) - 1)
        visitor = method == _QR
        subject = np.where(visitor, rng.integers(0, 1 << 32, n, dtype=np.uint64),
                           self._residents[gates, rng.integers(0, _RESIDENTS_PER_GATE, n)])
        denied = rng.random(n) < np.where(visitor, 0.05, 0.015)
        out = rng.random(n) < share_out
        temperature = np.where(self._thermal[gates] & (method == _FACE),
                               np.round(np.clip(rng.normal(36.6, 0.18, n), 36.2, 37.0), 1), 0.0)
        ms = np.sort(rng.integers(0, 1000, n))
        events = []
        for g, m, d, o, s, r, c, tail in zip(gates.tolist(), ms.tolist(), method.tolist(), out.tolist(),
                                             subject.tolist(), denied.tolist(), temperature.tolist(),
                                             self._tailgate_sensor[gates].tolist()):
            ev = {
                "type": "gate.pass", "ts": t * 1000 + m if ms_form[g] else f"{stamp}.{m:03d}+08:00",
                "gate_id": ids[g], "direction": "out" if o else "in", "method": METHODS[d],
                "result": "denied" if r else "granted", "subject": f"{s:08x}",
            }
            if c:
                ev["temperature_c"] = c
            if tail:
                ev["tailgate"] = False
            events.append(ev)
        return events

    def _traffic_events(self, t: int, h: float, stamp: str, active: list[Anomaly]) -> list[dict]:
        rng, ids, ms_form = self.rng, self._ids["traffic"], self._ms_form["traffic"]
        idx = self._tr_groups[t % TRAFFIC_INTERVAL_S]
        n = len(idx)
        demand = np.minimum(traffic_demand(h) * self._busyness[idx], 1.0)
        expected = self._capacity[idx] * 0.75 * demand
        free_flow = self._free_flow[idx]
        # Speed falls to about half of free flow in a saturated rush; congestion is below 30 %.
        speed = np.clip(free_flow * (1 - 0.5 * demand ** 2) * (1 + rng.normal(0, 0.04, n)),
                        0.42 * free_flow, 1.08 * free_flow)
        occupancy = np.clip(0.02 + 0.33 * demand ** 1.5 + rng.normal(0, 0.015, n), 0.005, 0.42)
        events = [
            {"type": "traffic.flow", "ts": t * 1000 if ms_form[i] else f"{stamp}+08:00", "sensor_id": ids[i],
             "interval_s": TRAFFIC_INTERVAL_S, "volume": v, "speed_kmh": s, "occupancy": o}
            for i, v, s, o in zip(idx.tolist(), rng.poisson(expected).tolist(),
                                  np.round(speed, 1).tolist(), np.round(occupancy, 3).tolist())
        ]
        offline = {a.index for a in active if a.rule == "traffic.offline"}
        for a in active:
            if a.index not in offline and self._tr_phase[a.index] == t % TRAFFIC_INTERVAL_S:
                pos = self._tr_pos[a.index]
                self._distort_traffic(a, events[pos], float(expected[pos]))
        return [ev for i, ev in zip(idx.tolist(), events) if i not in offline] if offline else events

    def _distort_traffic(self, a: Anomaly, ev: dict, expected: float) -> None:
        rng, free_flow = self.rng, float(self._free_flow[a.index])
        if a.rule == "traffic.congestion":
            ev["speed_kmh"] = round(float(np.clip(free_flow * a.level * rng.uniform(0.95, 1.1), 11, 0.29 * free_flow)), 1)
            ev["occupancy"] = round(float(rng.uniform(0.53, 0.6)), 3)
            ev["volume"] = int(ev["volume"] * 0.6)
        elif a.rule == "traffic.incident":
            ev["speed_kmh"] = round(float(np.clip(a.level + rng.normal(0, 0.5), 1.0, 9.5)), 1)
            ev["occupancy"] = round(float(rng.uniform(0.65, 0.9)), 3)
            ev["volume"] = int(ev["volume"] * 0.2)
        elif a.rule == "traffic.anomaly":
            ev["volume"] = int(round(a.level * expected + 10))
            ev["occupancy"] = round(min(ev["occupancy"] * 1.6, 0.45), 3)
        elif a.variant == "flatline":
            ev["volume"], ev["speed_kmh"], ev["occupancy"] = 12, round(0.8 * free_flow, 1), 0.081
        elif a.variant == "zeros":
            ev["volume"], ev["speed_kmh"], ev["occupancy"] = 0, 0.0, 0.0
        else:  # an impossible reading: no urban detector sees 250 km/h
            ev["speed_kmh"] = 250.0

    def _grid_events(self, t: int, h: float, stamp: str, active: list[Anomaly]) -> list[dict]:
        rng, ids, ms_form, pf_meter = self.rng, self._ids["grid"], self._ms_form["grid"], self._pf_meter
        idx = self._gr_groups[t % GRID_INTERVAL_S]
        n = len(idx)
        load = grid_load(h) * self._load_scale[idx] * (1 + rng.normal(0, 0.015, n))
        # Voltage sags a little under load, within ±2 % of nominal.
        voltage = self._nominal[idx] * np.clip(1.012 - 0.025 * load + rng.normal(0, 0.003, n), 0.982, 1.018)
        frequency = 50 + np.clip(rng.normal(0, 0.015, n), -0.045, 0.045)
        power_factor = np.clip(rng.normal(0.95, 0.01, n), 0.9, 0.99)
        events = []
        for i, p, v, f, pf in zip(idx.tolist(), np.round(load * self._rated[idx], 1).tolist(),
                                  np.round(voltage, 3).tolist(), np.round(frequency, 3).tolist(),
                                  np.round(power_factor, 3).tolist()):
            ev = {"type": "grid.measurement", "ts": t * 1000 if ms_form[i] else f"{stamp}+08:00",
                  "feeder_id": ids[i], "load_kw": p, "voltage_kv": v, "frequency_hz": f, "breaker": "closed"}
            if pf_meter[i]:
                ev["power_factor"] = pf
            events.append(ev)
        offline = set()
        for a in active:
            if a.rule == "grid.offline":
                offline.add(a.entity)
            elif self._gr_phase[a.index] == t % GRID_INTERVAL_S:
                self._distort_grid(a, events[self._gr_pos[a.index]], h)
        return [ev for ev in events if ev["feeder_id"] not in offline] if offline else events

    def _distort_grid(self, a: Anomaly, ev: dict, h: float) -> None:
        rng, i = self.rng, a.index
        rated, nominal = float(self._rated[i]), float(self._nominal[i])
        if a.rule == "grid.overload":
            ev["load_kw"] = round(rated * float(np.clip(a.level * rng.normal(1, 0.01), 1.05, 1.35)), 1)
            ev["voltage_kv"] = round(nominal * 0.975, 3)
        elif a.rule == "grid.voltage":
            ev["voltage_kv"] = round(nominal * a.level * float(rng.normal(1, 0.002)), 3)
        elif a.rule == "grid.frequency":
            ev["frequency_hz"] = round(a.level + float(rng.normal(0, 0.01)), 3)
        elif a.rule == "grid.outage":
            # Nothing to measure behind an open breaker: no voltage, so no frequency either.
            ev.update(load_kw=0.0, voltage_kv=0.0, frequency_hz=0.0, breaker="open")
            ev.pop("power_factor", None)
        else:  # grid.load_anomaly, against this hour's normal and never above rated
            normal = grid_load(h) * float(self._load_scale[i]) * rated
            ev["load_kw"] = round(min(normal * a.level * float(rng.normal(1, 0.02)), 0.95 * rated), 1)


def generate(city: City, start: datetime, duration_s: int, seed: int = 7, **options) -> Iterator[Tick]:
    """Every tick of a simulated span; `options` go to `Simulator` (anomaly_every_s, warmup_s …)."""
    start_s = int(start.timestamp())
    sim = Simulator(city, start_s, start_s + duration_s, seed, **options)
    for t in range(start_s, start_s + duration_s):
        yield sim.tick(t)


# ---------------------------------------------------------------- records

@dataclass(frozen=True)
class Record:
    domain: str
    partition: int
    key: str
    value: dict


class Batcher:
    """Turns events into records: one per event (batch 1), or `{"events": [...]}` of up
    to `batch` events whose entities share a partition, keyed by the first one's id."""

    def __init__(self, batch: int, partitions: dict[str, int]) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.batch, self.partitions = batch, partitions
        self._open: dict[tuple[str, int], list[dict]] = {}

    def add(self, domain: str, events: list[dict]) -> Iterator[Record]:
        key_field, n = ENTITY_FIELD[domain], self.partitions[domain]
        for ev in events:
            p = partition_for(ev[key_field], n)
            if self.batch == 1:
                yield Record(domain, p, ev[key_field], ev)
                continue
            open_ = self._open.setdefault((domain, p), [])
            open_.append(ev)
            if len(open_) == self.batch:
                yield self._close(domain, p)

    def drain(self) -> Iterator[Record]:
        """The part-filled batches."""
        for domain, p in list(self._open):
            yield self._close(domain, p)

    def _close(self, domain: str, p: int) -> Record:
        events = self._open.pop((domain, p))
        return Record(domain, p, events[0][ENTITY_FIELD[domain]], {"events": events})


# ---------------------------------------------------------------- the Kafka shell

@dataclass
class SimStats:
    events: int = 0
    records: int = 0
    anomalies: int = 0
    elapsed_s: float = 0.0
    sim_start: datetime | None = None
    sim_end: datetime | None = None

    @property
    def rate(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s else 0.0


async def run_simulator(
    bootstrap: str,
    topics: Topics,
    rate: float,
    batch: int = 1,
    seed: int = 7,
    truth_path: Path | None = None,
    duration_s: float | None = None,
    start: datetime | None = None,
    fast: bool = False,
    anomaly_every_s: float | None = 30.0,
    warmup_s: int = 300,
    city: City | None = None,
    linger_ms: int = 20,
    progress: IO[str] | None = sys.stderr,
) -> SimStats:
    """Publish the registry, then the city's events, to the Kafka cluster at `bootstrap`.

    Live mode (default): event time is the wall clock; runs `duration_s` seconds or
    until cancelled. The city is `City.sized_for(rate)` unless `city` is given, and
    gate passes fill whatever `rate` leaves after its periodic telemetry, so the
    producer holds `rate` events/s at every hour (see `Simulator`).

    Fast mode (`fast=True`, needs `duration_s`): the simulated span [`start`,
    `start + duration_s`) (default: the span ending now), at natural daily shapes and
    as fast as the broker takes it; `rate` then only sizes the city.

    `batch` 1 sends one event per record keyed by its entity id (contract §2); more
    sends `{"events": [...]}` records (see `Batcher`). An anomaly starts about every
    `anomaly_every_s` seconds (None: none) after `warmup_s`; each is appended to
    `truth_path` as a JSON line when it begins. A progress line goes to `progress`
    about every 5 s. On cancellation the producer is flushed and closed.
    """
    if fast and duration_s is None:
        raise ValueError("fast mode needs a duration")
    if start is not None and not fast:
        raise ValueError("a start time is for fast mode; live mode runs on the wall clock")
    city = city or City.sized_for(rate, seed)
    now = int(time.time())
    t0 = int(start.timestamp()) if start else (now - int(duration_s) if fast else now)
    t_end = None if duration_s is None else t0 + int(duration_s)
    sim = Simulator(city, t0, t_end, seed, anomaly_every_s, warmup_s, None if fast else rate)
    stats = SimStats(sim_start=datetime.fromtimestamp(t0, timezone.utc))

    truth = truth_path.open("w") if truth_path else None
    producer = AIOKafkaProducer(**client_options(bootstrap), acks=1, enable_idempotence=False,
                                linger_ms=linger_ms, max_batch_size=1 << 20)
    began = last_report = time.monotonic()
    last_events, t, pending = 0, t0, []

    async def send(records: list[Record]) -> None:
        for r in records:
            pending.append(await producer.send(topics.events(r.domain), orjson.dumps(r.value),
                                               key=r.key.encode(), partition=r.partition))
        stats.records += len(records)

    try:
        await producer.start()
        batcher = Batcher(batch, {d: len(await producer.partitions_for(topics.events(d))) for d in DOMAINS})
        await asyncio.gather(*[
            await producer.send(topics.registry, orjson.dumps(e), key=e["id"].encode()) for e in city.entities
        ])
        while t_end is None or t < t_end:
            if not fast:
                await asyncio.sleep(max(0.0, t - time.time()))
            tick = sim.tick(t)
            for anomaly in tick.began:
                stats.anomalies += 1
                if truth:
                    truth.write(orjson.dumps(anomaly.truth()).decode() + "\n")
                    truth.flush()
            await send([r for d in DOMAINS for r in batcher.add(d, tick.events[d])])
            if not fast:  # live records leave within their second
                await send(list(batcher.drain()))
            stats.events += sum(map(len, tick.events.values()))
            # Waiting on deliveries now and then surfaces broker errors and bounds memory.
            if not fast or len(pending) > 20000:
                await asyncio.gather(*pending)
                pending.clear()
            t += 1
            wall = time.monotonic()
            if progress and wall - last_report >= 5:
                print(f"simulate: {stats.events} events, {(stats.events - last_events) / (wall - last_report):.0f}/s"
                      f"{' (fast)' if fast else f' (target {rate:g}/s)'}, {stats.anomalies} anomalies injected,"
                      f" event time {datetime.fromtimestamp(t, timezone.utc).isoformat()}",
                      file=progress, flush=True)
                last_report, last_events = wall, stats.events
        await send(list(batcher.drain()))
        await asyncio.gather(*pending)
    finally:
        stats.elapsed_s = time.monotonic() - began
        stats.sim_end = datetime.fromtimestamp(t, timezone.utc)
        if truth:
            truth.close()
        await producer.stop()  # flushes whatever is still buffered, also on cancellation
    return stats
