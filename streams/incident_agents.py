"""The Faust shells of incidents (streams/incidents.py), in the same workers as the alerts.

    citybrain.alerts ──(re-key: which feeder powers the device, whose district)──►
        citybrain.incident-inputs ──(incident agent: one state per district)──► citybrain.incidents

The re-key agent is stateless: it looks each offline or outage alert up in the registry
and sends the part grouping needs to the partition of the district where its cause would
be. The incident agent folds them like the alert agent folds detections: its state per
district in a table co-partitioned with its source, holding the offset of the last input
applied, so a crash replays inputs that change nothing (their alert `seq` was seen), and
the incidents it repeats carry the same ids and seq, which readers upsert. A new incident
opens its case (streams/case_agent.py); so does the first state of an alert of a rule the
cases file names (`open_for`), sent by the re-key agent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import orjson
from faust.types import EventT

from streams import events as contract
from streams.agents import REGISTRY_WAIT_S, send_all, state_table, write
from streams.case_agent import CaseAgent
from streams.cases import case_id, opening
from streams.incidents import EFFECTS, BadInput, Grouping, apply, input_key, member, relevant
from streams.produce import Output
from streams.registry import Registry
from streams.settings import StreamSettings
from streams.topics import INCIDENTS_TABLE
from streams.topicview import TopicView
from streams.transport import batches, deliver_in_batches, flush_before_commit

ASKED_MAX = 100_000  # alert ids remembered as having asked for their case


class Rekey:
    """Alert states → incident inputs, keyed by the district of their possible cause; and
    the first state of an alert of a rule the cases file names → the opening of its case."""

    def __init__(self, app: faust.App, settings: StreamSettings, registry: Registry, feed: TopicView) -> None:
        self.app, self.topics, self.registry, self.feed = app, settings.topics, registry, feed
        self.open_for = settings.case_limits().open_for
        # Alerts whose case this process asked to open. The alert agent publishes an alert's
        # latest state per batch, so its first one may be any; each open alert asks once
        # here (again after a restart: the case agent opens a case once).
        self.asked: set[str] = set()
        app.agent(deliver_in_batches(app, self.topics.alerts), name="citybrain.incident-rekey")(self.run)

    async def run(self, stream: faust.StreamT) -> None:
        deadline = time.monotonic() + REGISTRY_WAIT_S
        while not self.feed.caught_up and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # a device's feeder is in the registry
        async for event in batches(self.app, stream):
            out = [o for r in event.value for o in self.route(r.value)]
            if out:
                await send_all(self.app, out)

    def route(self, value: bytes | None) -> list[Output]:
        try:
            alert = orjson.loads(value or b"null")
        except orjson.JSONDecodeError:
            return []  # the alerts topic is ours; the API's reader reports what isn't JSON
        if not isinstance(alert, dict):
            return []
        out = []
        if (alert.get("rule") in self.open_for and alert.get("status") in ("firing", "acknowledged")
                and alert.get("id") not in self.asked and isinstance(alert.get("area"), dict)):
            if len(self.asked) >= ASKED_MAX:
                self.asked.clear()
            self.asked.add(alert["id"])
            out.append((self.topics.case_inputs, case_id(alert["id"]).encode(),
                        orjson.dumps(opening("alert", alert, int(time.time() * 1000))), None, None))
        grouped = self.grouped(alert) if relevant(alert) else None
        return out + ([grouped] if grouped else [])

    def grouped(self, alert: dict[str, Any]) -> Output | None:
        feeder = (self.registry.get(str(alert.get("entity"))) or {}).get("feeder") if alert["rule"] in EFFECTS else None
        feeder = feeder if isinstance(feeder, str) else None
        try:
            doc = member(alert, feeder)
        except (KeyError, TypeError, ValueError):
            return None  # not an alert state
        district = self.registry.area(feeder)["district"] if feeder and self.registry.get(feeder) else None
        return self.topics.incident_inputs, input_key(doc, district), orjson.dumps(doc), None, None


class IncidentAgent:
    """Incident states from the incident-inputs topic, one table key per district."""

    def __init__(self, app: faust.App, settings: StreamSettings) -> None:
        self.app, self.topics = app, settings.topics
        self.grouping = Grouping(settings.incident_hold_s, settings.incident_area_min)
        self.state = state_table(app, settings, INCIDENTS_TABLE)
        flush_before_commit(app, self.state.flush)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.agent(deliver_in_batches(app, self.topics.incident_inputs), name="citybrain.incidents")(self.run)

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        await self.state.flush()

    async def run(self, stream: faust.StreamT) -> None:
        async for event in batches(self.app, stream):
            await self.process(event)

    async def process(self, event: EventT) -> None:
        partition = event.message.partition
        states: dict[str, Any] = {}
        changed: dict[str, dict[str, Any]] = {}
        rejected: list[Output] = []
        opened: list[Output] = []
        for r in event.value:
            key = (r.key or b"").decode(errors="replace")
            state = states[key] if key in states else self.state.get(key)
            if state is not None and r.offset <= state["o"]:
                continue  # applied before a crash
            try:
                state, incidents = apply(state, orjson.loads(r.value or b"null"), self.grouping)
            except (orjson.JSONDecodeError, BadInput) as exc:
                reason = f"incident input: {exc}" if isinstance(exc, BadInput) else f"not JSON: {exc}"
                rejected.append((self.topics.deadletter, r.key, contract.deadletter(
                    contract.Reject(reason, r.value or b""), self.topics.incident_inputs, partition, r.offset),
                    None, None))
                continue
            state["o"] = r.offset
            states[key] = state
            changed.update((i["id"], i) for i in incidents)
            # A new incident opens its case; a replay's repeat of it opens nothing (streams/cases.py).
            opened += [(self.topics.case_inputs, case_id(i["id"]).encode(),
                        orjson.dumps(opening("incident", i, int(time.time() * 1000))), None, None)
                       for i in incidents if i["seq"] == 1]
        await send_all(self.app, rejected + opened + [
            (self.topics.incidents, iid.encode(), orjson.dumps(i), None, None) for iid, i in changed.items()])
        write(self.state, event, states.items())


def register_command(app: faust.App, settings: StreamSettings) -> None:
    registry = Registry.from_file(settings.registry_file) if settings.registry_file else Registry()
    feed = TopicView(settings.bootstrap, settings.topics.registry, registry.apply)

    @app.task
    async def follow_registry_for_incidents() -> None:
        await feed.start()

    Rekey(app, settings, registry, feed)
    IncidentAgent(app, settings)
    CaseAgent(app, settings)
