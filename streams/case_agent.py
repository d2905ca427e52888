"""The Faust shell of cases (streams/cases.py), in the same workers as the alerts.

    incident agent (a new incident) ─┐
    alerts' re-key agent (open_for) ─┤
    API (accept, feedback, …) ───────┼─► citybrain.case-inputs ──(case agent)──► citybrain.cases
    case agent's clock (tick) ───────┘

The state of a partition's cases is one table key, `p<partition>`, holding the offset of
the last input applied that changed a case: a crash replays inputs that change nothing.
Time reaches the cases only as ticks in the topic, which the owner of a partition with
open cases writes to it every `TICK_S`: a replay sees the same ticks in the same places,
so it escalates exactly as the first run did, and a case escalates once, whoever owns it
next.
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson
from faust.types import EventT

from streams import events as contract
from streams.agents import send_all, state_table, write
from streams.cases import OPEN, BadInput, apply
from streams.produce import Output
from streams.settings import StreamSettings
from streams.topics import CASES_TABLE
from streams.transport import batches, deliver_in_batches, flush_before_commit

TICK_S = 1.0  # how often the clock reaches open cases: escalations are this late at most


def state_key(partition: int) -> str:
    return f"p{partition}"


class CaseAgent:
    def __init__(self, app: faust.App, settings: StreamSettings) -> None:
        self.app, self.topics = app, settings.topics
        self.limits = settings.case_limits()
        self.state = state_table(app, settings, CASES_TABLE)
        flush_before_commit(app, self.state.flush)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.agent(deliver_in_batches(app, self.topics.case_inputs), name="citybrain.cases")(self.run)
        app.timer(TICK_S)(self.tick)

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        await self.state.flush()

    async def tick(self) -> None:
        """Write the clock to each partition this worker owns that has an open case."""
        at = int(time.time() * 1000)
        owned = sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.topics.case_inputs)
        due = [p for p in owned if any(c["status"] in OPEN for c in
                                       (self.state.get(state_key(p)) or {"cases": {}})["cases"].values())]
        if due:
            value = orjson.dumps({"kind": "tick", "at": at})
            await send_all(self.app, [(self.topics.case_inputs, None, value, p, None) for p in due])

    async def run(self, stream: faust.StreamT) -> None:
        async for event in batches(self.app, stream):
            await self.process(event)

    async def process(self, event: EventT) -> None:
        partition = event.message.partition
        key = state_key(partition)
        state = self.state.get(key)
        changed: dict[str, dict[str, Any]] = {}
        rejected: list[Output] = []
        for r in event.value:
            if state is not None and r.offset <= state["o"]:
                continue  # applied before a crash
            try:
                state, cases = apply(state, orjson.loads(r.value or b"null"), self.limits)
            except (orjson.JSONDecodeError, BadInput) as exc:
                reason = f"case input: {exc}" if isinstance(exc, BadInput) else f"not JSON: {exc}"
                rejected.append((self.topics.deadletter, r.key, contract.deadletter(
                    contract.Reject(reason, r.value or b""), self.topics.case_inputs, partition, r.offset),
                    None, None))
                continue
            state["o"] = r.offset
            changed.update((c["id"], dict(c)) for c in cases)
        await send_all(self.app, rejected + [(self.topics.cases, cid.encode(), orjson.dumps(c), None, None)
                                             for cid, c in changed.items()])
        # A batch of ticks that moved no case leaves the stored state as it was: a replay
        # of those ticks decides the same (nothing), and the table isn't rewritten each second.
        if changed:
            write(self.state, event, [(key, state)])
