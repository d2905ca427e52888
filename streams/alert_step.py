"""One partition's step on the alert path, free of Faust: the alert agent's records in,
the (rule, entity) states to store, the alerts that changed and the dead letters out.

The alert path's counterpart of `streams.processor` (the domain path's step): the agent
(streams/agents.py, `AlertAgent`) only reads the stored states, sends what comes out and
writes the states back. Each state remembers the offset of the last input applied to
it (`o`), so a replay after a crash skips what was applied before; an input that is not
JSON, or not an alert input (streams/alerting.py, `BadInput`), becomes a dead letter
(contract §2) and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson

from streams.alerting import Alert, AlertState, BadInput, Policy, apply
from streams.events import Reject, deadletter
from streams.processor import Record


@dataclass
class AlertStep:
    states: dict[str, AlertState] = field(default_factory=dict)  # table key → its new state
    alerts: dict[str, Alert] = field(default_factory=dict)  # alert id → the alert as it now is
    deadletters: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # key, dead-letter doc


def step(records: Iterable[Record], topic: str, stored: Callable[[str], AlertState | None],
         policy: Policy) -> AlertStep:
    """Apply `records` of the alert-inputs `topic`, in order, to the states `stored(key)`
    returns (None for a key never seen)."""
    out = AlertStep()
    for r in records:
        key = (r.key or b"").decode(errors="replace")
        state = out.states[key] if key in out.states else stored(key)
        if state is not None and r.offset <= state["o"]:
            continue  # applied before a crash
        try:
            state, alert = apply(state, orjson.loads(r.value or b"null"), policy)
        except (orjson.JSONDecodeError, BadInput) as exc:
            reason = f"alert input: {exc}" if isinstance(exc, BadInput) else f"not JSON: {exc}"
            out.deadletters.append((r.key, deadletter(Reject(reason, r.value or b""), topic, r.partition, r.offset)))
            continue
        state["o"] = r.offset
        out.states[key] = state
        if alert is not None:
            out.alerts[alert["id"]] = alert
    return out
