"""Rules over a batch of events: per-event conditions in, detections out.

A domain module (gate.py, traffic.py, grid.py) turns a batch into one `Condition` per
rule: arrays over the batch's events saying where the rule's raise and clear conditions
hold, computed with numpy over the whole batch where a rule needs no history, and in
rounds where it does (baselines, recent speeds, minute counts): round k judges every
entity's k-th event of the batch at once, so each entity's events are still taken in
order. The `Detector` then runs `sustain` (blocks.py) only for the entities where
something is going on, so quiet entities cost one vectorised comparison per rule, and
judges silence (the `*.offline` rules) against the partition's stream time.

The state is the partition's `RuleState` (store.py), a row per entity: the columns `seen`
(the newest event time) and `due/<rule>` (when a silence rule falls due), the columns the
domain's conditions keep, and per rule the sustain states that are not idle
(`sparse["sustain/<rule>"]`, row → state: most entities have none, most of the time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
import orjson

from streams.columns import EventColumns
from streams.detectors.blocks import Timing, idle, is_idle, sustain
from streams.detectors.store import NONE, RuleState
from streams.registry import Registry
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
    other batches, decides exactly as the first run did. `slots` is each event's row in
    the rules' state (the partition's slot of its entity); `before` is the partition's
    stream time just before each event (streams.windows.stream_times). Entities are
    numbered in order of first appearance; `rows` is each one's row.
    """

    def __init__(self, events: EventColumns, slots: np.ndarray, before: np.ndarray | None = None) -> None:
        self.events = events
        self.n = len(events)
        self.ts = events.ts
        self.before = np.maximum.accumulate(self.ts) if before is None else before
        _, first, code = np.unique(slots, return_index=True, return_inverse=True)
        by_first = np.argsort(first, kind="stable")
        rank = np.empty(len(first), np.int64)
        rank[by_first] = np.arange(len(first))
        self.code = rank[code.reshape(-1)]
        self.rows = slots[first[by_first]]
        self.entities = [str(e) for e in events.entity[first[by_first]]]
        order = np.argsort(self.code, kind="stable")
        self.starts = np.flatnonzero(np.diff(self.code[order], prepend=-1))
        self.order = order
        self.group = self.code[order]  # each event's entity, in group order
        self.ends = np.append(self.starts[1:], self.n)

    def events_of(self, i: int) -> np.ndarray:
        """Entity i's events, in arrival order."""
        return self.order[self.starts[i]:self.ends[i]]

    def rounds(self) -> Iterator[np.ndarray]:
        """The events in rounds: round k holds each entity's k-th event (entities in order),
        so a rule with history can judge a round's events at once, each against its own
        entity's state, and still take every entity's events in order."""
        if not self.n:
            return
        k = np.arange(self.n) - self.starts[self.group]  # each event's place in its group
        by_round = self.order[np.lexsort((self.group, k))]
        yield from np.split(by_round, np.cumsum(np.bincount(k))[:-1])

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


class Profiles:
    """The distinct sets of rule parameters a domain's entities have, numbered: most
    entities share the book's defaults, and overrides by area or entity make a few more.
    A parameter over the profiles is one array, so the parameters of a batch's entities
    are a fancy index of it, not a dict lookup per entity."""

    def __init__(self) -> None:
        self.params: list[Params] = []
        self._ids: dict[bytes, int] = {}
        self._columns: dict[tuple[str, str], np.ndarray] = {}

    def id(self, params: Params) -> int:
        key = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
        i = self._ids.get(key)
        if i is None:
            i = self._ids[key] = len(self.params)
            self.params.append(params)
        return i

    def column(self, rule: str, name: str) -> np.ndarray:
        """The parameter over every profile; extended, not rebuilt, as profiles are added
        (an override per entity makes a profile per entity)."""
        c = self._columns.get((rule, name), np.empty(0))
        if len(c) < len(self.params):
            c = self._columns[rule, name] = np.append(c, [p[rule][name] for p in self.params[len(c):]])
        return c


class EntityParams(Sequence[Params]):
    """The rule parameters of a batch's entities (in `entities` order): entity i's as
    `params[i]`, one parameter for all of them as `column(rule, name)`."""

    def __init__(self, profiles: Profiles, which: np.ndarray) -> None:
        self.profiles, self.which = profiles, which

    def __len__(self) -> int:
        return len(self.which)

    def __getitem__(self, i: int) -> Params:  # type: ignore[override]
        return self.profiles.params[self.which[i]]

    def column(self, rule: str, name: str) -> np.ndarray:
        return self.profiles.column(rule, name)[self.which]


class Conditions(Protocol):
    """A domain's rules over a batch; `ratings` are the registry's figures the domain
    names (its `RATINGS`), one per entity, NaN where none is given."""

    def __call__(self, batch: Batch, state: RuleState, params: EntityParams,
                 ratings: dict[str, np.ndarray]) -> dict[str, Condition]: ...


def param(batch: Batch, params: EntityParams, rule: str, name: str) -> np.ndarray:
    """A rule's parameter, one per event of the batch."""
    return params.column(rule, name)[batch.code]


class Detector:
    """The rules of one domain, for the entities of any number of partitions."""

    def __init__(self, domain: str, conditions: Conditions, rules: RuleBook, registry: Registry,
                 ratings: tuple[str, ...] = ()) -> None:
        self.domain, self.conditions, self.rules, self.registry = domain, conditions, rules, registry
        self.ratings = ratings  # the registry's figures the conditions judge by
        self.silence = [r for r in CATALOGUE if r.startswith(domain + ".") and r.endswith(".offline")]
        self.profiles = Profiles()

    def params(self, entity: str) -> Params:
        return self.rules.for_entity(self.domain, entity, self.registry.area(entity))

    def _derived(self, batch: Batch, state: RuleState) -> tuple[EntityParams, dict[str, np.ndarray]]:
        """The batch's entities' parameters (by the profile of each row) and ratings (NaN
        where the registry gives none), derived once per row; an entity that moves may fall
        under other overrides, so all are derived anew whenever the registry changes."""
        if state.derived_from != self.registry.version:
            state.derived.clear()
            state.derived_from = self.registry.version
        profile = state.column("profile", np.int32, -1, derived=True)
        ratings = {name: state.column(f"rating/{name}", np.float64, np.nan, derived=True) for name in self.ratings}
        which = profile[batch.rows]
        for i in np.flatnonzero(which < 0).tolist():
            entity, row = batch.entities[i], batch.rows[i]
            which[i] = profile[row] = self.profiles.id(self.params(entity))
            entry = self.registry.get(entity) or {}
            for name, column in ratings.items():
                column[row] = entry.get(name) or np.nan
        return EntityParams(self.profiles, which), {name: c[batch.rows] for name, c in ratings.items()}

    def detect(self, batch: Batch, state: RuleState) -> list[Detection]:
        """Advance the rules' state (the rows `batch.rows`) over the batch."""
        if not batch.n:
            return []
        state.reserve(int(batch.rows.max()) + 1)
        params, ratings = self._derived(batch, state)
        out = self._silences_ended(batch, state, params)
        for rule, cond in self.conditions(batch, state, params, ratings).items():
            table = _sustain(state, rule)
            active = _busy(table, batch.rows)  # a condition pending or firing
            active[batch.code[cond.bad if cond.seen is None else cond.bad & cond.seen]] = True
            for i in np.flatnonzero(active).tolist():
                p = params[i][rule]
                if not p["enabled"]:
                    continue
                idx = batch.events_of(i)
                if cond.seen is not None:
                    idx = idx[cond.seen[idx]]
                row = int(batch.rows[i])
                rs = table.pop(row, None) or idle()
                for tr in sustain(rs, Timing.of(p), batch.ts[idx], cond.bad[idx], cond.ok[idx],
                                  cond.value[idx], cond.threshold[idx]):
                    out.append(self._detection(rule, batch.entities[i], p, tr))
                if not is_idle(rs):
                    table[row] = rs
        seen = state.column("seen", np.int64, NONE)
        was = seen[batch.rows]
        now = np.maximum(was, np.maximum.reduceat(batch.ts[batch.order], batch.starts))
        seen[batch.rows] = now
        moved = now != was
        for rule in self.silence:  # when the entity goes silent, from its newest event on
            due = state.column(f"due/{rule}", np.int64, NONE)
            timeout = (params.column(rule, "timeout_s") * 1000).astype(np.int64)
            due[batch.rows[moved]] = np.where(params.column(rule, "enabled") > 0, now + timeout, NONE)[moved]
        return out

    def _silences_ended(self, batch: Batch, state: RuleState, params: EntityParams) -> list[Detection]:
        """Silences that an event of this batch ends: an entity already flagged, and gaps
        nobody flagged yet (its next event came after stream time, or its own clock, had
        passed its timeout), which fire and resolve here, just as they would have across
        two batches. The entity's own gap counts because stream time is the partition's:
        a device alone on its partition (another producer's partitioner) moves it only
        itself, and its silence must still be seen, as it was seen beside others."""
        out: list[Detection] = []
        reach = np.maximum(batch.before, batch.ts)[batch.order]  # how far time had got at each event
        never = np.iinfo(np.int64).min // 2
        seen = state.column("seen", np.int64, NONE)[batch.rows]
        last, _ = batch.running_max(batch.ts[batch.order], np.where(seen == NONE, never, seen))
        for rule in self.silence:
            table = _sustain(state, rule)
            timeout = (params.column(rule, "timeout_s") * 1000)[batch.group]
            # a gap: time got past the timeout since the entity's previous event
            maybe = _busy(table, batch.rows)
            maybe[batch.group[(last > never) & (reach >= last + timeout)]] = True
            for i in np.flatnonzero(maybe).tolist():
                p = params[i][rule]
                if not p["enabled"]:
                    continue
                row = int(batch.rows[i])
                last_seen = None if seen[i] == NONE else int(seen[i])
                for j in batch.events_of(i).tolist():
                    t = int(batch.ts[j])
                    if (row not in table and last_seen is not None
                            and max(int(batch.before[j]), t) >= last_seen + p["timeout_s"] * 1000):
                        out.append(self._went_silent(rule, batch.entities[i], last_seen, p, table, row))
                    rs = table.pop(row, None)
                    if rs is not None:
                        out.append(self._detection(rule, batch.entities[i], p, (
                            "resolved", t, p["timeout_s"], p["timeout_s"], rs["episode"], rs["seq"] + 1)))
                    last_seen = t if last_seen is None else max(last_seen, t)
        return out

    def silent(self, state: RuleState, entities: Sequence[str], stream_time: int) -> list[Detection]:
        """Entities (named by row in `entities`) that have sent nothing for their rule's
        timeout, by stream time, earliest first. The alert's time is when the silence
        crossed the timeout, so it doesn't depend on when the partition noticed."""
        out: list[Detection] = []
        seen = state.column("seen", np.int64, NONE)
        for rule in self.silence:
            due = state.column(f"due/{rule}", np.int64, NONE)
            table = _sustain(state, rule)
            rows = np.flatnonzero((due[:state.rows] != NONE) & (due[:state.rows] <= stream_time))
            for row in sorted(rows.tolist(), key=lambda r: (int(due[r]), entities[r])):
                due[row] = NONE  # noted once; the entity's next event sets it again
                if row not in table:
                    entity = entities[row]
                    out.append(self._went_silent(rule, entity, int(seen[row]), self.params(entity)[rule], table, row))
        return out

    def _went_silent(self, rule: str, entity: str, last: int, p: dict[str, Any], table: dict[int, Any],
                     row: int) -> Detection:
        due = int(last + p["timeout_s"] * 1000)
        table[row] = {**idle(), "on": True, "episode": due, "seq": 1, "emitted": due}
        return self._detection(rule, entity, p, ("firing", due, p["timeout_s"], p["timeout_s"], due, 1))

    def _detection(self, rule: str, entity: str, p: dict[str, Any], tr: tuple) -> Detection:
        status, ts, value, threshold, episode, seq = tr
        severity = p["severity"]
        if status == "firing" and "critical" in p and value >= p["critical"]:
            severity = "critical"
        return Detection(rule, entity, status, severity, float(value), float(threshold), int(ts),
                         int(episode), int(seq), CATALOGUE[rule].describe(value, threshold, p),
                         self.registry.area(entity))


def _sustain(state: RuleState, rule: str) -> dict[int, dict[str, Any]]:
    """The rule's sustain states that are not idle, by row."""
    return state.sparse.setdefault(f"sustain/{rule}", {})


def _busy(table: dict[int, Any], rows: np.ndarray) -> np.ndarray:
    """Which of these rows have a sustain state (a condition pending or firing)."""
    if not table:
        return np.zeros(len(rows), bool)
    return np.isin(rows, np.fromiter(table, np.int64, len(table)))
