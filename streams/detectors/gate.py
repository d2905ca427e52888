"""Gate rules: tailgating, fever, bursts of denials and crowd surges (contract §3 gate events).

`gate.offline` is a silence rule, judged by the engine against stream time.
"""

from __future__ import annotations

import numpy as np

from streams.detectors.blocks import Baselines
from streams.detectors.engine import Batch, Condition, EntityParams, param
from streams.detectors.store import NONE, RuleState

MINUTE_MS = 60_000
SURGE_RATE = 0.1  # baseline learning rate per minute of passes
MAX_SUBJECTS = 32  # subjects with recent denials remembered per gate: constant memory
RATINGS = ()  # the registry's figures the rules judge by


def conditions(batch: Batch, state: RuleState, params: EntityParams,
               ratings: dict[str, np.ndarray]) -> dict[str, Condition]:
    tail = batch.equals("tailgate", True)
    one = np.ones(batch.n)
    temperature = batch.col("temperature_c")
    fever_at = param(batch, params, "gate.fever", "threshold")
    fever = temperature >= fever_at
    return {
        "gate.tailgating": Condition(tail, ~tail, one, one),
        "gate.fever": Condition(fever, ~fever, temperature, fever_at),
        "gate.denied_burst": _denied_burst(batch, state, params),
        "gate.crowd_surge": _crowd_surge(batch, state, params),
    }


def _denied_burst(batch: Batch, state: RuleState, params: EntityParams) -> Condition:
    """Denials within `within_s`, counted per gate and per subject (a credential tried again
    and again); only denied passes are looked at, so the usual gate costs nothing here, and
    only gates with recent denials keep any (`sparse`: a dict per such gate)."""
    denied = batch.equals("result", "denied")
    bad = np.zeros(batch.n, bool)
    value = np.zeros(batch.n)
    limit = np.zeros(batch.n)
    for i in np.unique(batch.code[denied]).tolist():
        p = params[i]["gate.denied_burst"]
        window, per_gate, per_subject = p["within_s"] * 1000, int(p["gate_denials"]), int(p["subject_denials"])
        recent = state.sparse.setdefault("denials", {}).setdefault(int(batch.rows[i]), {"gate": [], "subjects": {}})
        passes = batch.events_of(i)
        for j in passes[denied[passes]].tolist():
            t = int(batch.ts[j])
            gate = [x for x in recent["gate"] if x > t - window][-(per_gate - 1):] + [t]
            subject = str(batch.label("subject", j))
            mine = [x for x in recent["subjects"].get(subject, ()) if x > t - window][-(per_subject - 1):] + [t]
            recent["gate"] = gate
            recent["subjects"][subject] = mine
            bad[j] = len(gate) >= per_gate or len(mine) >= per_subject
            value[j], limit[j] = (len(mine), per_subject) if len(mine) >= per_subject else (len(gate), per_gate)
        t = int(batch.ts[passes[-1]])
        subjects = {s: ts for s, ts in recent["subjects"].items() if ts[-1] > t - window}
        recent["subjects"] = dict(sorted(subjects.items(), key=lambda kv: kv[1][-1])[-MAX_SUBJECTS:])
    return Condition(bad, ~bad, value, limit)


def _crowd_surge(batch: Batch, state: RuleState, params: EntityParams) -> Condition:
    """Passes per minute against that hour's normal. A minute is judged at the gate's first
    event after it (heartbeats come every 30 s, so that is soon), which is the only event
    the rule looks at; the others say nothing about it.

    The minutes and their counts are found for the whole batch at once (a running maximum
    per gate); the judgements, about one per gate and minute, go in rounds: every gate's
    k-th minute of the batch at once. Each gate keeps its current minute and the passes
    counted in it so far (`minute`, NONE before its first event) and a baseline."""
    n = batch.n
    seen, bad, ok = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    value, limit = np.zeros(n), np.zeros(n)
    held = state.column("minute", np.int64, NONE, 2)  # [minute, passes counted in it]
    base = Baselines(state, "base")
    if n == 0:
        return Condition(bad, ok, value, limit, seen)
    order, starts = batch.order, batch.starts
    gate = batch.group
    minute = (batch.ts // MINUTE_MS)[order]
    mine = held[batch.rows]
    fresh = mine[:, 0] == NONE
    current = np.where(fresh, minute[starts], mine[:, 0])
    before, after = batch.running_max(minute, current)  # the gate's newest minute around each event
    counted = (batch.equals("type", "gate.pass")[order] & (minute >= before)).astype(np.int64)  # a late pass counts nowhere
    total = np.cumsum(counted) - counted  # passes counted before each event, batch-wide
    opened = total[starts] - np.where(fresh, 0, mine[:, 1])  # … at each gate's current minute's start
    boundary = np.flatnonzero(after > before)  # the first event of a later minute, by gate
    g = gate[boundary]
    first = np.diff(g, prepend=-1) != 0  # the gate's first boundary in the batch
    since = np.where(first, opened[g], np.concatenate([[0], total[boundary]])[:-1])  # … where its minute's count starts
    count = total[boundary] - since
    place = np.arange(len(boundary))
    k = place - np.maximum.accumulate(np.where(first, place, 0))  # the gate's k-th boundary
    ratio = params.column("gate.crowd_surge", "ratio")
    excess = params.column("gate.crowd_surge", "min_excess")
    for r in range(int(k.max()) + 1 if len(k) else 0):
        b = boundary[k == r]
        e, c, j = gate[b], count[k == r], order[b]
        at = before[b] * MINUTE_MS
        normal = base.expected(batch.rows[e], at)
        judged = ~np.isnan(normal)  # until the baseline speaks, it only learns
        most = ratio[e] * normal + excess[e]
        seen[j], bad[j], ok[j] = judged, judged & (c >= most), judged & (c < 0.7 * most)
        value[j], limit[j] = np.where(judged, c, 0), np.where(judged, most, 0)
        learn = ~bad[j]
        base.learn(batch.rows[e[learn]], at[learn], c[learn], SURGE_RATE,
                   high=np.where(judged, 1.5 * normal + 2, np.inf)[learn])
    ends = batch.ends - 1
    last = np.append(g[1:] != g[:-1], True) if len(g) else np.zeros(0, bool)
    opened[g[last]] = total[boundary[last]]  # where each gate's current minute's count starts now
    held[batch.rows] = np.column_stack([after[ends], (total + counted)[ends] - opened])
    return Condition(bad, ok, value, limit, seen)
