"""The rule catalogue: every rule's name, severity and thresholds, and a city's overrides.

Rule names are part of the contract (`<domain>.<condition>`). Each rule has documented
defaults here; a city changes them in a rules file (YAML or JSON), globally or for one
domain, area or entity:

    rules:                         # the city's defaults
      grid.overload: {threshold: 0.95}
      gate.crowd_surge: {enabled: false}
    overrides:                     # later, more specific entries win
      - match: {district: 市南区}
        rules: {traffic.congestion: {speed_ratio: 0.25}}
      - match: {entity: F-0042}
        rules: {grid.overload: {threshold: 0.9, critical: 1.1}}

`match` takes one of `domain`, `district`, `street`, `community`, `grid_cell`, `entity`;
overrides apply from least to most specific (domain < district < … < entity), file order
breaking ties. Every name, parameter and value is checked at start, and a bad one stops
the worker with one line naming it (services/cli.py).

Common parameters: `enabled`, `severity`, `raise_s` (how long the condition must hold
before the alert fires), `clear_s` (how long it must be gone before the alert resolves by
itself) and `repeat_s` (how often a firing condition re-reports, which is what `count`
and `updated_at` of an alert show). All times are event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orjson
import yaml

from streams.registry import LEVELS

SEVERITIES: tuple[str, ...] = ("info", "warning", "minor", "major", "critical")
COMMON = {"enabled": True, "raise_s": 0.0, "clear_s": 60.0, "repeat_s": 60.0}


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    summary: str  # str.format template over value, threshold and the rule's parameters
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self, value: float, threshold: float, params: Mapping[str, Any]) -> str:
        """The summary people read. `value` and `threshold` are the detection's: for the
        rules that learn what is usual, the threshold is derived from that (ratio × usual
        + excess) and differs from any parameter, so they take precedence over `params`
        (some rules have a `threshold` parameter too)."""
        return self.summary.format_map({**params, "value": value, "threshold": threshold})

    @property
    def domain(self) -> str:
        return self.name.partition(".")[0]


def _rule(name: str, severity: str, summary: str, **params: Any) -> Rule:
    return Rule(name, severity, summary, {**COMMON, "severity": severity, **params})


CATALOGUE: dict[str, Rule] = {r.name: r for r in (
    # ---- gate: residential access control
    _rule("gate.tailgating", "minor", "tailgating at the gate (a second person followed a pass)",
          clear_s=120.0),
    _rule("gate.fever", "major", "temperature {value:.1f} °C at the gate (threshold {threshold:.1f} °C)",
          threshold=37.3, critical=38.5),
    _rule("gate.denied_burst", "minor",
          "{value:.0f} denied passes within {within_s:.0f} s (threshold {threshold:.0f})",
          subject_denials=5, gate_denials=20, within_s=300.0, clear_s=300.0),
    _rule("gate.offline", "major", "no heartbeat or pass for {value:.0f} s (timeout {threshold:.0f} s)",
          timeout_s=90.0, clear_s=0.0),
    _rule("gate.crowd_surge", "major", "{value:.0f} passes a minute; threshold {threshold:.0f} "
          "({ratio:g} × the usual for the hour + {min_excess:.0f})",
          ratio=2.5, min_excess=6.0, raise_s=60.0, clear_s=120.0),
    # Early warning, as grid.overload_forecast below: the passes forecast to reach
    # `threshold` × the gate's capacity (registry `capacity_per_min`) within `horizon_s`.
    # A gate without a capacity is not watched, so a city without them pays nothing.
    _rule("gate.crowd_forecast", "warning", "passes forecast to peak at {value:.0%} of the gate's capacity "
          "within {horizon_s:.0f} s (threshold {threshold:.0%})",
          threshold=1.0, horizon_s=1800.0, raise_s=0.0, clear_s=300.0, repeat_s=60.0),
    # ---- traffic: road detectors
    _rule("traffic.congestion", "major", "speed {value:.0%} of free flow (threshold {threshold:.0%}) "
          "with occupancy high",
          speed_ratio=0.3, occupancy=0.5, raise_s=120.0, clear_s=120.0),
    _rule("traffic.incident", "critical", "speed collapsed to {value:.0f} km/h (threshold "
          "{threshold:.0f} km/h) with occupancy jump",
          max_speed_kmh=10.0, speed_drop=0.4, occupancy=0.62, clear_s=120.0),
    _rule("traffic.sensor_fault", "warning", "detector readings flat, stuck at zero or impossible",
          repeats=3, max_speed_kmh=200.0, max_volume_per_min=200.0, clear_s=120.0),
    # Three missed one-minute intervals, as gate.offline is three missed heartbeats; a city
    # whose detectors report every 5 minutes sets timeout_s: 900 for them. Minor: a silent
    # detector costs traffic data, not anyone's way home (in a feeder's incident, the
    # outage's severity leads).
    _rule("traffic.offline", "minor", "no reading for {value:.0f} s (timeout {threshold:.0f} s)",
          timeout_s=180.0, clear_s=0.0),
    # Early warning, as grid.overload_forecast below: the speed forecast falls under
    # `speed_ratio` × the road's free flow (registry `free_flow_kmh`) within `horizon_s`.
    # Off by default: on one-minute readings with the simulator's 4 % noise it warns too
    # late to help (benchmarks/README.md, early warning); a city whose detectors report
    # smoother speeds turns it on in the rules file. Off, it learns nothing and costs nothing.
    _rule("traffic.congestion_forecast", "warning", "speed forecast to fall to {value:.0%} of free flow "
          "within {horizon_s:.0f} s (threshold {threshold:.0%})",
          enabled=False, speed_ratio=0.3, horizon_s=3600.0, raise_s=0.0, clear_s=300.0, repeat_s=60.0),
    _rule("traffic.anomaly", "minor", "volume {value:.0f}; threshold {threshold:.0f} "
          "({ratio:g} × the usual for the time of day + {min_excess:.0f})",
          ratio=2.0, min_excess=8.0, raise_s=120.0, clear_s=180.0),
    # ---- grid: distribution feeders
    _rule("grid.overload", "major", "load {value:.0%} of rated (threshold {threshold:.0%})",
          threshold=1.0, critical=1.2, clear_ratio=0.95, raise_s=60.0),
    _rule("grid.voltage", "major", "voltage {value:.3f} p.u., outside ±{tolerance:.0%} (GB/T 12325)",
          tolerance=0.07, clear_tolerance=0.065, raise_s=30.0, clear_s=30.0),
    _rule("grid.frequency", "major", "frequency {value:.2f} Hz, outside 50 ± {tolerance_hz} Hz (GB/T 15945)",
          tolerance_hz=0.2, raise_s=20.0, clear_s=30.0),
    _rule("grid.outage", "critical", "breaker open or no voltage", min_voltage_ratio=0.1,
          clear_s=30.0),
    _rule("grid.load_anomaly", "minor", "load {value:.0f} kW, normal {threshold:.0f} kW",
          deviation=0.4, raise_s=60.0),
    _rule("grid.offline", "major", "no measurement for {value:.0f} s (timeout {threshold:.0f} s)",
          timeout_s=60.0, clear_s=0.0),
    # Early warning (streams/early_warning.py): the load forecast over the next `horizon_s`
    # passes `threshold` × rated with the 80 % interval's low bound, for `raise_s`; clears
    # when not even the forecast's mean passes it, for `clear_s`. No hold by default: in
    # benchmarks.forecast_ramps a hold of 1 to 6 minutes barely lowered the false warnings
    # and cost its length in lead (benchmarks/README.md, early warning).
    _rule("grid.overload_forecast", "warning", "load forecast to peak at {value:.0%} of rated within "
          "{horizon_s:.0f} s (threshold {threshold:.0%})",
          threshold=1.0, horizon_s=3600.0, raise_s=0.0, clear_s=300.0, repeat_s=60.0),
)}

_SPECIFICITY = ("domain",) + LEVELS + ("entity",)


class RulesError(ValueError):
    """A rules file that can't be used; the message names the file and the problem."""


def _check_params(where: str, rules: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(rules, dict):
        raise RulesError(f"{where}: expected a mapping of rule names to parameters")
    out = {}
    for name, params in rules.items():
        if name not in CATALOGUE:
            raise RulesError(f"{where}: unknown rule {name!r}; rules are {', '.join(CATALOGUE)}")
        if not isinstance(params, dict):
            raise RulesError(f"{where}.{name}: expected a mapping of parameters")
        defaults = CATALOGUE[name].params
        for key, value in params.items():
            if key not in defaults:
                raise RulesError(f"{where}.{name}: unknown parameter {key!r}; "
                                 f"it has {', '.join(sorted(defaults))}")
            expected = defaults[key]
            if key == "severity":
                if value not in SEVERITIES:
                    raise RulesError(f"{where}.{name}.severity: {value!r} is not one of {', '.join(SEVERITIES)}")
            elif isinstance(expected, bool):
                if not isinstance(value, bool):
                    raise RulesError(f"{where}.{name}.{key}: expected true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise RulesError(f"{where}.{name}.{key}: expected a non-negative number, got {value!r}")
        out[name] = dict(params)
    return out


class RuleBook:
    """Resolved parameters of every rule for any entity: catalogue ← file ← overrides."""

    def __init__(self, rules: Mapping[str, Mapping[str, Any]] | None = None,
                 overrides: list[tuple[str, str, dict[str, dict[str, Any]]]] | None = None) -> None:
        self._base = {name: {**r.params, **(rules or {}).get(name, {})} for name, r in CATALOGUE.items()}
        self._overrides = sorted(overrides or [], key=lambda o: _SPECIFICITY.index(o[0]))  # stable
        self._cache: dict[tuple, dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_file(cls, path: Path) -> "RuleBook":
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"{path}: {exc.strerror or exc}") from None
        try:
            doc = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise RulesError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                             f"{str(exc).splitlines()[0]}") from None
        doc = doc or {}
        if not isinstance(doc, dict) or set(doc) - {"rules", "overrides"}:
            raise RulesError(f"{path}: expected a mapping with 'rules' and/or 'overrides'")
        rules = _check_params(f"{path}: rules", doc.get("rules") or {})
        overrides = []
        for i, o in enumerate(doc.get("overrides") or []):
            where = f"{path}: overrides[{i}]"
            match = o.get("match") if isinstance(o, dict) else None
            if not isinstance(match, dict) or len(match) != 1 or next(iter(match)) not in _SPECIFICITY:
                raise RulesError(f"{where}.match: expected one of {', '.join(_SPECIFICITY)} with a value")
            (level, value), = match.items()
            overrides.append((level, str(value), _check_params(f"{where}.rules", o.get("rules") or {})))
        return cls(rules, overrides)

    def ever_enabled(self, rule: str) -> bool:
        """Whether the rule is on for any entity at all: by the catalogue, the file, or an override."""
        return bool(self._base[rule]["enabled"]) or any(r.get(rule, {}).get("enabled") for _, _, r in self._overrides)

    def for_entity(self, domain: str, entity: str, area: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """The parameters of each of the domain's rules for one entity."""
        key = (domain, entity, tuple(area.get(level) for level in LEVELS))
        hit = self._cache.get(key)
        if hit is None:
            where = {"domain": domain, "entity": entity, **area}
            hit = {name: dict(p) for name, p in self._base.items() if name.startswith(domain + ".")}
            for level, value, rules in self._overrides:
                if where.get(level) == value:
                    for name, params in rules.items():
                        if name in hit:
                            hit[name].update(params)
            if len(self._cache) > 100_000:  # entities come and go; don't let the cache grow forever
                self._cache.clear()
            self._cache[key] = hit
        return hit
