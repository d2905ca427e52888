"""Early warning (预警): a feeder's load, a road's speed or a gate's passes forecast to
cross its limit before it does.

One partition's step, free of Faust: the closed window records of the aggregates topic
in (streams/processor.py `window_records`), detections for the alert-inputs topic out.
Per partition and kind of series (`MODELS`) one `Forecaster` (streams/forecast.py) holds
a slot per watched series (`<rule>|<entity>`), learns each closed window's figure (a
field's mean, or a counter), and forecasts the next `horizon_s`; the rule judges that
forecast against the entity's limit (a share of a registry rating, `WATCHES`). An entity
without that rating is neither learnt nor judged (one whose warning is pending or firing
is judged on against no limit, so that a rating taken away clears its warning), and a
domain where no entity has it, and no warning is on, is not even parsed:

- bad (the warning's condition): the bound of the model's interval nearest the limit
  crosses it at some window within the horizon (for an overload, the low bound of the
  80 % interval above the rating: about 90 % sure the load will be over it; for a gate's
  passes, of the 50 % interval, `MODELS`);
- ok (the warning clears): not even the forecast's mean crosses it within the horizon;
- both held for the rule's `raise_s` / `clear_s` (streams/detectors/blocks.py `sustain`).

A detection carries the usual alert fields (value: the forecast at its worst within the
horizon, as a share of the rating; threshold: the rule's share) and a `forecast` object:
when the mean is expected to cross the limit, the worst window with its interval, and
the rule whose alert follows if the warning comes true (`warns_of`; none for a gate's
capacity, which no rule judges) with the first window past the limit (`came_true_at`):
the link from the warning to the real alert.
The detection's time is the end of the window the forecast was made from (the forecast
is made as of then; it is known once that window closes, `lateness_s` later).

A series is judged once its model has learnt a day (before that the forecaster has no
profile and no trend, streams/forecast.py). Everything decided depends only on the
closed windows, in the order of the partition: the state records the last source
offset applied, a replay skips what it covers, and a closed window seen again (a domain
worker's own replay sends it twice) is not learnt or judged twice, so a replay after a
crash decides exactly as the first run did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import orjson

from streams import outlook
from streams.detectors.blocks import Timing, idle, is_idle, sustain
from streams.detectors.engine import Detection
from streams.forecast import DAY_MS, Config, Forecaster
from streams.processor import Record, iso
from streams.registry import Derived, Registry
from streams.rules import CATALOGUE, RuleBook
from streams.state import CHUNK_BYTES, SlotIndex

log = logging.getLogger(__name__)

LAYOUT = 3  # 1: one model for every series (now the "smooth" one); 2: no outlook
MODEL_HORIZON_MS = 3_600_000  # errors (and so intervals) are tracked this far ahead


@dataclass(frozen=True)
class Model:
    """How a kind of series is forecast: its trend and the coverage of the interval the
    warning is judged on (benchmarks/README.md, early warning)."""

    trend_rate: float
    trend_damping: float
    coverage: float


# A stored model keeps the settings it was made with: changed here, they reach the series
# of partitions that start anew (or a state reset), not those learning already.
MODELS: dict[str, Model] = {
    # Loads and speeds: a quick trend, which sees a ramp coming (the forecaster's default is
    # tuned for NAB and sees one only when it is nearly there), judged on the 80 % interval.
    "smooth": Model(0.03, 0.96, 0.8),
    # Counts a minute (a gate's passes): their Poisson noise turns a quick trend into false
    # warnings (28 per 1,000 gate-hours), so a slower one, judged on the 50 % interval.
    "counts": Model(0.01, 0.96, 0.5),
}


@dataclass(frozen=True)
class Watch:
    """What a forecast rule watches: the window mean of `field` (or, with `counter`, the
    window's count of that counter), against the registry's `rating` × the rule's
    parameter `limit`, warning of it going above (or below). A counter's rating is per
    minute, so its limit scales with the window."""

    rule: str
    warns_of: str | None  # the rule of the condition itself, if a rule judges it
    field: str
    rating: str
    limit: str
    above: bool = True
    counter: bool = False
    model: str = "smooth"  # of MODELS

    def values(self, cols: dict[str, Any], rows: int) -> np.ndarray:
        """A closed window record's figure per row: the window's count of the counter, or
        the field's mean; NaN where there is none to learn (no reading, or no column)."""
        total, count = outlook.Figure(self.field, self.field, counter=self.counter).sums(cols, rows)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count

    def per_window(self, window_ms: int) -> float:
        """The rating's unit in windows: a counter's rating is per minute."""
        return window_ms / 60_000 if self.counter else 1.0


WATCHES: dict[str, Watch] = {
    "grid": Watch("grid.overload_forecast", "grid.overload", "load_kw", "rated_kw", "threshold"),
    # Speed only: the congestion rule's occupancy is not forecast, and a road without a
    # free-flow rating is not judged (the congestion rule falls back to its usual speed).
    "traffic": Watch("traffic.congestion_forecast", "traffic.congestion", "speed_kmh", "free_flow_kmh", "speed_ratio",
                     above=False),
    # Against the gate's throughput (registry `capacity_per_min`, passes a minute): a gate
    # without one is not watched. No rule judges passes against capacity (gate.crowd_surge
    # judges them against the gate's usual), so it warns of none.
    "gate": Watch("gate.crowd_forecast", None, "passes", "capacity_per_min", "threshold",
                  counter=True, model="counts"),
}
RULES: tuple[str, ...] = tuple(w.rule for w in WATCHES.values())


def model_config(window_ms: int, model: str = "smooth") -> Config:
    """A forecaster of the warnings: a step per window, an hour of tracked horizon."""
    m = MODELS[model]
    return Config(step_ms=window_ms, horizon=max(1, -(-MODEL_HORIZON_MS // window_ms)),
                  trend_rate=m.trend_rate, trend_damping=m.trend_damping, coverage=m.coverage)


@dataclass
class Warnings:
    """One partition's state: per kind of series (MODELS) a model and its series'
    slots, made when a first series of that kind is learnt; each warning's sustain state."""

    models: dict[str, Forecaster] = field(default_factory=dict)
    series: dict[str, SlotIndex] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<rule>|<entity>" → not idle
    offset: int = -1  # the last source offset applied
    # Every device series' forecast (streams/outlook.py), learnt from the same closed
    # windows and stored with this state; None when off.
    ahead: outlook.Outlook | None = None


@dataclass
class Applied:
    """What a step did: detections for the alert-inputs topic (key, doc) and records for
    the forecasts topic."""

    detections: list[tuple[bytes, bytes]] = field(default_factory=list)
    forecasts: list[tuple[bytes, bytes]] = field(default_factory=list)


class EarlyWarning:
    def __init__(self, rules: RuleBook, registry: Registry, window_ms: int,
                 configs: dict[str, Config] | None = None, ahead: bool = True) -> None:
        """`configs`: models' configs, where not `model_config(window_ms, model)` (benchmarks
        try others); `ahead`: whether the partitions' states forecast every device series
        (the outlook; a window that does not divide its step turns it off). Raises
        ValueError for a window that does not divide a day."""
        self.rules, self.registry, self.window_ms = rules, registry, window_ms
        self.ahead = ahead and _new_outlook(window_ms) is not None
        if ahead and not self.ahead:
            log.error("outlook off: a %d s window does not divide its %d s step", window_ms // 1000,
                      outlook.STEP_MS // 1000)
        self.configs = {m: model_config(window_ms, m) for m in MODELS} | (configs or {})
        self.ready_steps = DAY_MS // window_ms
        # A domain whose rule no entity has on (the roads' by default) is not even parsed:
        # learning its series would cost a parse and a model step per window, never judged.
        self.on = {d for d, w in WATCHES.items() if rules.ever_enabled(w.rule)}
        # whether any entity carries a rating, kept until the registry changes (a city's
        # gates mostly have no capacity; then their windows are not even parsed)
        self._rated: Derived[str, bool] = Derived(registry, lambda rating: any(e.get(rating) for e in registry))
        # an entity's parameters of every rule, kept until the registry changes (a feeder
        # that moves may fall under other overrides): each closed window asks for them
        self._params: Derived[tuple[str, str], dict[str, Any]] = Derived(
            registry, lambda key: rules.for_entity(key[0], key[1], registry.area(key[1])))

    def new(self) -> Warnings:
        return Warnings(ahead=_new_outlook(self.window_ms) if self.ahead else None)

    def load(self, chunks: list[bytes]) -> Warnings:
        """A stored state (`decode`), with or without its outlook as this step is set."""
        return decode(chunks, self.window_ms if self.ahead else None)

    def step(self, state: Warnings, records: Sequence[Record]) -> Applied:
        """Apply a partition's records in order. Only closed windows are read (their key
        says so: `<domain>/<p>|<start>|closed/<chunk>`): each is added to the outlook, and
        judged if its domain is watched; live figures pass by unparsed, and so does a
        watched domain's closed window when the outlook is off."""
        out = Applied()
        for r in records:
            if r.offset <= state.offset:
                continue  # applied before a crash
            state.offset = r.offset
            domain, _, rest = (r.key or b"").partition(b"/")
            domain_name = domain.decode(errors="replace")
            if b"|closed/" not in rest:
                continue
            watch = WATCHES.get(domain_name)
            judged = watch is not None and ((domain_name in self.on and self._rated[watch.rating])
                                            or _any_on(state, watch))
            ahead = state.ahead is not None and domain_name in outlook.FIGURES
            if not (judged or ahead):
                continue
            try:
                doc = orjson.loads(r.value or b"null")
                ws, entities, cols = int(doc["window_start"]), [str(e) for e in doc["entities"]], doc["cols"]
                values = watch.values(cols, len(entities)) if judged else None
                learnt = state.ahead.add(domain_name, ws, entities, cols) if ahead else None
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not a window record a worker wrote: nothing to learn from it
            if learnt is not None:
                out.forecasts += state.ahead.records(r.partition, learnt)
            if judged:
                found = self.observe(state, watch, ws, entities, values)
                out.detections += [(d.key, orjson.dumps(doc)) for d, doc in found]
        return out

    def observe(self, state: Warnings, watch: Watch, ws: int, entities: list[str],
                values: np.ndarray) -> list[tuple[Detection, dict[str, Any]]]:
        """One closed window's figures of some of a domain's entities: learn them, forecast,
        judge. Each detection with its alert-inputs doc."""
        domain = watch.rule.partition(".")[0]
        params = [self._params[domain, e][watch.rule] for e in entities]
        rated = np.array([(self.registry.get(e) or {}).get(watch.rating) or np.nan for e in entities], np.float64)
        rated *= watch.per_window(self.window_ms)
        # An entity whose rule is off, or without the rating, is neither learnt nor judged,
        # unless its warning is on: judged against no limit, it clears after clear_s rather
        # than firing for good.
        rated[[not p["enabled"] for p in params]] = np.nan
        pending = np.array([f"{watch.rule}|{e}" in state.rules for e in entities], bool)
        on = np.flatnonzero(np.isfinite(rated) | pending)
        if not len(on):
            return []
        if watch.model not in state.models:
            state.models[watch.model] = Forecaster(self.configs[watch.model])
            state.series[watch.model] = SlotIndex()
        model, series = state.models[watch.model], state.series[watch.model]
        slots = series.of([f"{watch.rule}|{entities[i]}" for i in on.tolist()])
        model.reserve(len(series))
        fresh = (model.state["last_step"][slots] < ws // self.window_ms) & np.isfinite(values[on])
        keep = on[fresh].tolist()
        slots, values = slots[fresh], values[keep]
        entities, params = [entities[i] for i in keep], [params[i] for i in keep]
        if not entities:
            return []
        model.learn(slots, np.full(len(slots), ws), values)
        # Only a series that has learnt a day, or has a warning pending or firing, can be
        # judged; the rest (every series in a new city's first day) are not forecast at all.
        ready = model.state["seen"][slots] >= self.ready_steps
        judged = [i for i, e in enumerate(entities) if ready[i] or f"{watch.rule}|{e}" in state.rules]
        if not judged:
            return []
        slots, values, ready = slots[judged], values[judged], ready[judged]
        entities, params = [entities[i] for i in judged], [params[i] for i in judged]
        rated = rated[on[fresh]][judged]
        share = np.array([p[watch.limit] for p in params])
        # at most a day ahead: a horizon mistyped in the rules file must not take the memory
        ahead = np.array([min(max(1, round(p["horizon_s"] * 1000 / self.window_ms)), self.ready_steps)
                          for p in params])
        fc = model.forecast(slots, int(ahead.max()))
        # Judged as "above the limit" on both sides of a negated axis when watching for a fall.
        sign = 1.0 if watch.above else -1.0
        limit = sign * rated * share
        sure = sign * (fc.low if watch.above else fc.high)  # the interval's bound nearest the limit
        within = np.arange(fc.mean.shape[1])[None, :] < ahead[:, None]
        bad = ready & ((sure > limit[:, None]) & within).any(axis=1)
        crosses = (sign * fc.mean > limit[:, None]) & within
        ok = ~(ready & crosses.any(axis=1))
        worst = np.argmax(np.where(within, sign * fc.mean, -np.inf), axis=1)
        now = ws + self.window_ms
        out = []
        for i, entity in enumerate(entities):
            key = f"{watch.rule}|{entity}"
            rs = state.rules.get(key)
            if not bad[i] and rs is None:
                continue  # the quiet majority: nothing pending, nothing firing
            p, rs = params[i], rs or idle()
            j = int(worst[i])
            if sign * values[i] > limit[i]:
                rs.setdefault("came_true", ws)  # the first window past the limit, this episode
            for tr in sustain(rs, Timing.of(p), np.array([now]), bad[i:i + 1], ok[i:i + 1],
                              np.array([fc.mean[i, j] / rated[i]]), share[i:i + 1]):
                status, ts, value, threshold, episode, seq = tr
                at = int(fc.step[i, np.argmax(crosses[i])]) * self.window_ms if crosses[i].any() else None
                forecast = {
                    "made_at": iso(now), "horizon_s": p["horizon_s"], "coverage": model.config.coverage,
                    "crosses_at": None if at is None else iso(at),
                    "crosses_in_s": None if at is None else (at - now) / 1000,
                    "worst_at": iso(int(fc.step[i, j]) * self.window_ms), "value": _share(fc.mean[i, j], rated[i]),
                    "low": _share(fc.low[i, j], rated[i]), "high": _share(fc.high[i, j], rated[i]),
                    # the rule whose alert follows if the warning comes true, and when it did
                    "warns_of": watch.warns_of,
                    "came_true_at": iso(rs["came_true"]) if "came_true" in rs else None}
                summary = (_summary(watch.rule, p, value, threshold, forecast) if np.isfinite(rated[i]) else
                           f"no longer judged: the rule is off for it, or the registry has no {watch.rating}")
                d = Detection(watch.rule, entity, status, p["severity"], _share(value, 1.0) or 0.0, float(threshold),
                              int(ts), int(episode), int(seq), summary, self.registry.area(entity))
                out.append((d, {**d.doc(), "forecast": forecast}))
            if is_idle(rs):
                state.rules.pop(key, None)
            else:
                state.rules[key] = rs
        return out


def _any_on(state: Warnings, watch: Watch) -> bool:
    """Whether a warning of the watch's rule is pending or firing in the partition."""
    return any(k.startswith(f"{watch.rule}|") for k in state.rules)


def _share(x: float, rated: float) -> float | None:
    r = x / rated
    return round(float(r), 4) if np.isfinite(r) else None


def _summary(rule: str, p: dict[str, Any], value: float, threshold: float, fc: dict[str, Any]) -> str:
    text = CATALOGUE[rule].describe(value, threshold, p)
    if fc["crosses_in_s"] is None:
        return f"{text}; no longer expected within {p['horizon_s'] / 60:g} min"
    when = "past it now" if fc["crosses_in_s"] <= 0 else f"expected to cross it in {fc['crosses_in_s'] / 60:.0f} min"
    return f"{text}; {when} ({fc['coverage'] * 100:.0f} % interval at the worst {fc['low']:.0%}–{fc['high']:.0%})"


# ---------------------------------------------------------------- stored layout


def encode(state: Warnings) -> list[bytes]:
    """The state as chunks of at most CHUNK_BYTES: a JSON header (naming each model's
    series and its encoded size, and the outlook's size), then the models one after
    another, then the outlook (streams/outlook.py owns its layout)."""
    models = [(kind, model.encode()) for kind, model in state.models.items()]
    ahead = outlook.encode(state.ahead) if state.ahead is not None else b""
    header = orjson.dumps({"layout": LAYOUT, "offset": state.offset, "rules": state.rules,
                           "models": [{"kind": kind, "series": state.series[kind].ids, "bytes": len(blob)}
                                      for kind, blob in models],
                           "outlook_bytes": len(ahead) if state.ahead is not None else None})
    payload = b"".join([len(header).to_bytes(8, "big"), header, *(blob for _, blob in models), ahead])
    return [payload[i:i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)]


def decode(chunks: list[bytes], outlook_window_ms: int | None) -> Warnings:
    """Layout 3; layout 2 (no outlook: one starts anew); or layout 1 (one model of every
    series, all of them the smooth kind). With `outlook_window_ms` None the state has no
    outlook (turned off: a stored one is dropped), else the one stored or a new one."""
    payload = b"".join(chunks)
    size = int.from_bytes(payload[:8], "big")
    header, body = orjson.loads(payload[8:8 + size]), payload[8 + size:]
    fresh = _new_outlook(outlook_window_ms) if outlook_window_ms is not None else None
    if header.get("layout") == 1:
        return Warnings({"smooth": Forecaster.decode(body)}, {"smooth": SlotIndex(header["series"])},
                        header["rules"], header["offset"], fresh)
    if header.get("layout") not in (2, LAYOUT):
        raise ValueError(f"early-warning state layout {header.get('layout')!r}; this worker reads 1 to {LAYOUT}")
    state, at = Warnings(rules=header["rules"], offset=header["offset"]), 0
    for m in header["models"]:
        state.models[m["kind"]] = Forecaster.decode(body[at:at + m["bytes"]])
        state.series[m["kind"]] = SlotIndex(m["series"])
        at += m["bytes"]
    state.ahead = fresh
    ahead_bytes = header.get("outlook_bytes")
    if ahead_bytes is not None and outlook_window_ms is not None:
        try:
            state.ahead = outlook.decode(body[at:at + ahead_bytes], outlook_window_ms)
        except ValueError as exc:
            # The outlook learns anew; early warning's models, a day of learning, are kept.
            log.error("outlook: stored state unusable (%s); learning anew", exc)
    return state


def _new_outlook(window_ms: int) -> outlook.Outlook | None:
    try:
        return outlook.Outlook(window_ms)
    except ValueError:
        return None
