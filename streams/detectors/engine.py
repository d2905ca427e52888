"""Rules over a batch of events: per-event conditions in, detections out.

A domain module (gate.py, traffic.py, grid.py) turns a batch into one `Condition` per
rule: arrays over the batch's events saying where the rule's raise and clear conditions
hold, computed with numpy over the whole batch where a rule needs no history and by a
short pass per entity where it does (baselines, recent speeds, denial counts). The
`Detector` then runs `sustain` (blocks.py) only for the entities where something is
going on, so quiet entities cost one vectorised comparison per rule, and judges silence
(the `*.offline` rules) against the partition's stream time.

Per entity the state is one small dict, kept by the caller with the entity's other state:
    {"seen": last event time, "r": {rule: sustain state}, …}
plus whatever history the domain's conditions keep under their own keys.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from streams.columns import EventColumns
from streams.detectors.blocks import Timing, idle, is_idle, sustain
from streams.registry import Derived, Registry
from streams.rules import CATALOGUE, RuleBook

Params = dict[str, dict[str, Any]]  # rule → parameters, for one entity


@dataclass(frozen=True)
class Detection:
    """A rule's condition began, persists or cleared on one entity: the alerts' input."""

    rule: str
    entity: str
    status: str  # firing | resolved
    severity: str
    value: float
    threshold: float
    ts: int  # event time, ms
    episode: int  # event time the condition began: with rule and entity, names the episode
    seq: int  # 1 for the first report of an episode, then +1 per report
    summary: str
    area: Mapping[str, str]

    @property
    def key(self) -> bytes:
        """Every input of one (rule, entity) goes to one partition, in order."""
        return f"{self.rule}|{self.entity}".encode()

    def doc(self) -> dict[str, Any]:
        return {"kind": "detection", "rule": self.rule, "domain": self.rule.partition(".")[0],
                "entity": self.entity, "status": self.status, "severity": self.severity,
                "value": self.value, "threshold": self.threshold, "ts": self.ts,
                "episode": self.episode, "seq": self.seq, "summary": self.summary,
                "area": dict(self.area)}


@dataclass(frozen=True)
class Condition:
    bad: np.ndarray  # the raise condition holds at this event
    ok: np.ndarray  # the clear condition holds at this event
    value: np.ndarray  # what the alert reports
    threshold: np.ndarray
    seen: np.ndarray | None = None  # events that say something about the rule (None: all)


class Batch:
    """One step's events of a domain, grouped by entity, each group in arrival order.

    Arrival order, not event time: every rule then sees each entity's events in the order
    of the partition, whatever the batch boundaries, so a replay after a crash, cut into
    other batches, decides exactly as the first run did. `before` is the partition's
    stream time just before each event (streams.windows.stream_times). Entities are
    numbered in order of first appearance.
    """

    def __init__(self, events: EventColumns, before: np.ndarray | None = None) -> None:
        self.events = events
        self.n = len(events)
        self.ts = events.ts
        self.before = np.maximum.accumulate(self.ts) if before is None else before
        names, first, code = np.unique(events.entity.astype(str), return_index=True, return_inverse=True)
        rank = np.empty(len(names), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(names))
        self.code = rank[code.reshape(-1)]
        self.entities = [str(e) for e in names[np.argsort(first, kind="stable")]]
        order = np.argsort(self.code, kind="stable")
        self.starts = np.flatnonzero(np.diff(self.code[order], prepend=-1))
        self.order = order
        self.group = self.code[order]  # each event's entity, in group order
        self.groups: list[np.ndarray] = np.split(order, self.starts[1:]) if self.n else []

    def running_max(self, x: np.ndarray, initial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For integer values `x` of the events in group order (`x[order]`) and a start
        per entity: the entity's running maximum just before each event, and just after.
        One accumulate over the batch: each entity's values are lifted above the previous
        entity's, so no maximum carries from one entity to the next."""
        lift = self.group * (np.int64(1) << 42)  # above any epoch ms until 2109, and any minute
        after = np.maximum(np.maximum.accumulate(x + lift) - lift, initial[self.group])
        before = np.empty_like(after)
        before[1:] = after[:-1]
        before[self.starts] = initial
        return before, after

    def col(self, name: str) -> np.ndarray:
        """A numeric field as floats; NaN where an event lacks it."""
        return self.events.number(name)

    def equals(self, name: str, value: Any) -> np.ndarray:
        return self.events.equals(name, value)

    def label(self, name: str, i: int) -> Any:
        return self.events.labels[name][i]

    def per_event(self, per_entity: Sequence[float]) -> np.ndarray:
        """Spread one number per entity (in `entities` order) over the entity's events."""
        return np.asarray(per_entity, dtype=float)[self.code]


class Conditions(Protocol):
    def __call__(self, batch: Batch, states: list[dict[str, Any]], params: list[Params],
                 ratings: list[dict[str, Any]]) -> dict[str, Condition]: ...


def param(batch: Batch, params: list[Params], rule: str, name: str) -> np.ndarray:
    return batch.per_event([p[rule][name] for p in params])


def new_state() -> dict[str, Any]:
    return {"seen": None, "r": {}}


class Detector:
    """The rules of one domain, for the entities of any number of partitions."""

    def __init__(self, domain: str, conditions: Conditions, rules: RuleBook, registry: Registry) -> None:
        self.domain, self.conditions, self.rules, self.registry = domain, conditions, rules, registry
        self.silence = [r for r in CATALOGUE if r.startswith(domain + ".") and r.endswith(".offline")]
        # an entity that moves may fall under other overrides: derived anew on every change
        self._params: Derived[str, Params] = Derived(
            registry, lambda entity: rules.for_entity(domain, entity, registry.area(entity)))

    def params(self, entity: str) -> Params:
        return self._params[entity]

    def detect(self, batch: Batch, states: list[dict[str, Any]]) -> list[Detection]:
        """Advance the states (one per `batch.entities`, updated in place) over the batch."""
        params = [self.params(e) for e in batch.entities]
        ratings = [self.registry.get(e) or {} for e in batch.entities]
        ongoing: dict[str, set[int]] = {}  # rule → entities with a condition pending or firing
        for i, st in enumerate(states):
            for rule in st["r"]:
                ongoing.setdefault(rule, set()).add(i)
        out = self._silences_ended(batch, states, params, ongoing)
        for rule, cond in self.conditions(batch, states, params, ratings).items():
            active = set(np.unique(batch.code[cond.bad if cond.seen is None else cond.bad & cond.seen]).tolist())
            for i in sorted(active | ongoing.get(rule, set())):
                p = params[i][rule]
                if not p["enabled"]:
                    continue
                idx = batch.groups[i]
                if cond.seen is not None:
                    idx = idx[cond.seen[idx]]
                rs = states[i]["r"].get(rule) or idle()
                for tr in sustain(rs, Timing.of(p), batch.ts[idx], cond.bad[idx], cond.ok[idx],
                                  cond.value[idx], cond.threshold[idx]):
                    out.append(self._detection(rule, batch.entities[i], p, tr))
                if is_idle(rs):
                    states[i]["r"].pop(rule, None)
                else:
                    states[i]["r"][rule] = rs
        newest = np.maximum.reduceat(batch.ts[batch.order], batch.starts).tolist() if batch.n else []
        for st, t in zip(states, newest):
            st["seen"] = t if st["seen"] is None else max(st["seen"], t)
        return out

    def _silences_ended(self, batch: Batch, states: list[dict[str, Any]], params: list[Params],
                        ongoing: dict[str, set[int]]) -> list[Detection]:
        """Silences that an event of this batch ends: an entity already flagged, and gaps
        nobody flagged yet (its next event came after stream time, or its own clock, had
        passed its timeout), which fire and resolve here, just as they would have across
        two batches. The entity's own gap counts because stream time is the partition's:
        a device alone on its partition (another producer's partitioner) moves it only
        itself, and its silence must still be seen, as it was seen beside others."""
        out: list[Detection] = []
        reach = np.maximum(batch.before, batch.ts)[batch.order]  # how far time had got at each event
        never = np.iinfo(np.int64).min // 2
        last, _ = batch.running_max(batch.ts[batch.order],
                                    np.array([never if s["seen"] is None else s["seen"] for s in states], np.int64))
        for rule in self.silence:
            timeout = np.array([p[rule]["timeout_s"] * 1000 for p in params])[batch.group]
            # a gap: time got past the timeout since the entity's previous event
            maybe = np.zeros(len(batch.entities), bool)
            maybe[batch.group[(last > never) & (reach >= last + timeout)]] = True
            for i in sorted(set(np.flatnonzero(maybe).tolist()) | ongoing.get(rule, set())):
                p = params[i][rule]
                if not p["enabled"]:
                    continue
                last_seen = states[i]["seen"]
                for j in batch.groups[i].tolist():
                    t = int(batch.ts[j])
                    if (rule not in states[i]["r"] and last_seen is not None
                            and max(int(batch.before[j]), t) >= last_seen + p["timeout_s"] * 1000):
                        out.append(self._went_silent(rule, batch.entities[i], last_seen, p, states[i]))
                    rs = states[i]["r"].pop(rule, None)
                    if rs is not None:
                        out.append(self._detection(rule, batch.entities[i], p, (
                            "resolved", t, p["timeout_s"], p["timeout_s"], rs["episode"], rs["seq"] + 1)))
                    last_seen = t if last_seen is None else max(last_seen, t)
        return out

    def watch(self, watch: "SilenceWatch", entity: str, last: int) -> None:
        """Note an entity's newest event time, to find it when it goes silent."""
        for rule in self.silence:
            p = self.params(entity)[rule]
            if p["enabled"]:
                watch.saw(entity, last, last + int(p["timeout_s"] * 1000))

    def silent(self, watch: "SilenceWatch", stream_time: int,
               state_of: Callable[[str], dict[str, Any]]) -> list[Detection]:
        """Entities that have sent nothing for their rule's timeout, by stream time. The
        alert's time is when the silence crossed the timeout, so it doesn't depend on
        when the partition noticed; `state_of` gives (and lets this update) a state."""
        out: list[Detection] = []
        for entity, last in watch.due(stream_time):
            state = state_of(entity)
            for rule in self.silence:
                if rule not in state["r"]:
                    out.append(self._went_silent(rule, entity, last, self.params(entity)[rule], state))
        return out

    def _went_silent(self, rule: str, entity: str, last: int, p: dict[str, Any],
                     state: dict[str, Any]) -> Detection:
        due = int(last + p["timeout_s"] * 1000)
        state["r"][rule] = {**idle(), "on": True, "episode": due, "seq": 1, "emitted": due}
        return self._detection(rule, entity, p, ("firing", due, p["timeout_s"], p["timeout_s"], due, 1))

    def _detection(self, rule: str, entity: str, p: dict[str, Any], tr: tuple) -> Detection:
        status, ts, value, threshold, episode, seq = tr
        severity = p["severity"]
        if status == "firing" and "critical" in p and value >= p["critical"]:
            severity = "critical"
        return Detection(rule, entity, status, severity, float(value), float(threshold), int(ts),
                         int(episode), int(seq), CATALOGUE[rule].describe(value, threshold, p),
                         self.registry.area(entity))


class SilenceWatch:
    """One partition's entities ordered by when they go silent: a heap of (due, entity,
    last seen), stale entries skipped, so each step looks only at what fell due."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self._heap: list[tuple[int, str, int]] = []

    def saw(self, entity: str, last: int, due: int) -> None:
        if self.seen.get(entity) != last:
            self.seen[entity] = last
            heapq.heappush(self._heap, (due, entity, last))

    def due(self, stream_time: int) -> list[tuple[str, int]]:
        out = []
        while self._heap and self._heap[0][0] <= stream_time:
            _, entity, last = heapq.heappop(self._heap)
            if self.seen.get(entity) == last:
                out.append((entity, last))
        return out
