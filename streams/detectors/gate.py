"""Gate rules: tailgating, fever, bursts of denials and crowd surges (contract §3 gate events).

`gate.offline` is a silence rule, judged by the engine against stream time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.detectors.blocks import expected, learn, new_baseline
from streams.detectors.engine import Batch, Condition, Params, param

MINUTE_MS = 60_000
SURGE_RATE = 0.1  # baseline learning rate per minute of passes
MAX_SUBJECTS = 32  # subjects with recent denials remembered per gate: constant memory


def conditions(batch: Batch, states: list[dict[str, Any]], params: list[Params],
               ratings: list[dict[str, Any]]) -> dict[str, Condition]:
    tail = batch.equals("tailgate", True)
    one = np.ones(batch.n)
    temperature = batch.col("temperature_c")
    fever_at = param(batch, params, "gate.fever", "threshold")
    fever = temperature >= fever_at
    return {
        "gate.tailgating": Condition(tail, ~tail, one, one),
        "gate.fever": Condition(fever, ~fever, temperature, fever_at),
        "gate.denied_burst": _denied_burst(batch, states, params),
        "gate.crowd_surge": _crowd_surge(batch, states, params),
    }


def _denied_burst(batch: Batch, states: list[dict[str, Any]], params: list[Params]) -> Condition:
    """Denials within `within_s`, counted per gate and per subject (a credential tried again
    and again); only denied passes are looked at, so the usual gate costs nothing here."""
    denied = batch.equals("result", "denied")
    bad = np.zeros(batch.n, bool)
    value = np.zeros(batch.n)
    limit = np.zeros(batch.n)
    for i in np.unique(batch.code[denied]).tolist():
        p = params[i]["gate.denied_burst"]
        window, per_gate, per_subject = p["within_s"] * 1000, int(p["gate_denials"]), int(p["subject_denials"])
        recent = states[i].setdefault("denials", {"gate": [], "subjects": {}})
        for j in batch.groups[i][denied[batch.groups[i]]].tolist():
            t = int(batch.ts[j])
            gate = [x for x in recent["gate"] if x > t - window][-(per_gate - 1):] + [t]
            subject = str(batch.label("subject", j))
            mine = [x for x in recent["subjects"].get(subject, ()) if x > t - window][-(per_subject - 1):] + [t]
            recent["gate"] = gate
            recent["subjects"][subject] = mine
            bad[j] = len(gate) >= per_gate or len(mine) >= per_subject
            value[j], limit[j] = (len(mine), per_subject) if len(mine) >= per_subject else (len(gate), per_gate)
        t = int(batch.ts[batch.groups[i][-1]])
        subjects = {s: ts for s, ts in recent["subjects"].items() if ts[-1] > t - window}
        recent["subjects"] = dict(sorted(subjects.items(), key=lambda kv: kv[1][-1])[-MAX_SUBJECTS:])
    return Condition(bad, ~bad, value, limit)


def _crowd_surge(batch: Batch, states: list[dict[str, Any]], params: list[Params]) -> Condition:
    """Passes per minute against that hour's normal. A minute is judged at the gate's first
    event after it (heartbeats come every 30 s, so that is soon), which is the only event
    the rule looks at; the others say nothing about it.

    The minutes are found for the whole batch at once (a running maximum per gate); only
    the judgements, about one per gate and minute, walk the baselines one by one."""
    n = batch.n
    seen, bad, ok = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    value, limit = np.zeros(n), np.zeros(n)
    if n == 0:
        return Condition(bad, ok, value, limit, seen)
    order, starts = batch.order, batch.starts
    gate = batch.group
    minute = (batch.ts // MINUTE_MS)[order]
    held = [st.get("minute") for st in states]
    current = np.array([h[0] if h else m for h, m in zip(held, minute[starts].tolist())], np.int64)
    before, after = batch.running_max(minute, current)  # the gate's newest minute around each event
    counted = (batch.equals("type", "gate.pass")[order] & (minute >= before)).astype(np.int64)  # a late pass counts nowhere
    total = np.cumsum(counted) - counted  # passes counted before each event, batch-wide
    opened = total[starts][gate] - np.array([h[1] if h else 0 for h in held], np.int64)[gate]  # … at the current minute's start
    boundary = np.flatnonzero(after > before)  # the first event of a later minute
    since = {}  # gate → where its current minute's count starts (cumulative passes)
    for k in boundary.tolist():
        i = int(gate[k])
        count = int(total[k] - since.get(i, opened[k]))
        since[i] = total[k]
        st, p = states[i], params[i]["gate.crowd_surge"]
        j = int(order[k])
        base = st.setdefault("base", new_baseline())
        at = int(before[k]) * MINUTE_MS
        normal = expected(base, at)
        if normal is None:
            learn(base, at, count, SURGE_RATE)
            continue
        most = p["ratio"] * normal + p["min_excess"]
        seen[j], bad[j], ok[j], value[j], limit[j] = True, count >= most, count < 0.7 * most, count, most
        if not bad[j]:
            learn(base, at, count, SURGE_RATE, high=1.5 * normal + 2)
    ends = np.append(starts[1:], n) - 1
    end_total = (total + counted)[ends]
    for i, (st, m, t) in enumerate(zip(states, after[ends].tolist(), end_total.tolist())):
        st["minute"] = [m, int(t - since.get(i, opened[starts[i]]))]
    return Condition(bad, ok, value, limit, seen)

