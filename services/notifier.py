"""`citybrain notify`: delivers the city's alerts to the alerting tools it already runs.

It reads the compacted alerts topic in its own consumer group (`<prefix>notifier`), and
the incidents and cases topics (contract §8), whose states are told as alerts of rule
`incident.<kind>` and `case` (services/alert_payloads.py). It commits a batch's
offsets only once the batch is in its SQLite file (`DATA_DIR/notifier.sqlite3`,
services/notifier_store.py). From that file:
- every webhook URL gets Alertmanager webhook v4 notifications, grouped by rule and
  district (group wait, then at most one per group interval), each through a bounded queue
  in the file, in order, retried with exponential backoff until the receiver takes it;
- Alertmanager gets each alert's latest state, re-sent while it is open. Alertmanager keeps
  alerts by their labels, so the latest state replaces any older one and a failed push
  needs no queue: the next push carries what it carried.

Run one notifier per deployment: a group needs all its alerts, and the queue is a file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from services.alert_payloads import (Notice, alertmanager_push, group_entries, parse_alert, parse_case,
                                     parse_incident, rfc3339, webhook_payload)
from services.config import ConfigError, Settings
from services.notifier_store import NotifierStore
from services.processes import port_in_use
from services.provision import ensure_topics
from streams.incidents import CAUSES, EFFECTS
from streams.kafka_security import client_options
from streams.topics import FETCH_MAX_WAIT_MS

log = logging.getLogger(__name__)

TICK_S = 0.25  # how often due groups, queues and pushes are looked at
BACKOFF_FIRST_S = 0.5
HTTP_TIMEOUT_S = 10.0
PUSH_BATCH = 500  # alerts per Alertmanager request
# Prometheus' choice: an open alert's endsAt is four resends ahead, so Alertmanager lets it
# go only after four missed resends (a notifier that is down), not after one slow one.
ENDS_AHEAD = 4
ALERTMANAGER = "alertmanager"
OUTCOMES = ("delivered", "failed", "dropped")


def receiver_name(url: str) -> str:
    """A webhook URL as a metric label and payload `receiver`: no credentials, no query."""
    u = urlsplit(url)
    return f"{u.hostname}{f':{u.port}' if u.port else ''}{u.path}"


def backoff_s(attempts: int, cap_s: float) -> float:
    """Wait before the next attempt after `attempts` failed ones: 0.5 s, 1 s, 2 s, ... cap."""
    return min(cap_s, BACKOFF_FIRST_S * 2 ** (attempts - 1))


def outcome(status: int | None) -> str:
    """What an answer means for a delivery, as Alertmanager's own notifiers judge it: 2xx
    delivered; no answer, 408, 429 and 5xx are worth another try; any other answer would be
    the same next time, so the notification is dropped."""
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status is None or status in (408, 429) or status >= 500:
        return "failed"
    return "dropped"


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry, receivers: list[str]) -> None:
        self.notifications = Counter(
            "citybrain_notifications", "Notification deliveries by outcome: delivered; failed "
            "(an attempt that will be retried); dropped (refused by the receiver, or the oldest "
            "beyond the queue bound)", ["receiver", "outcome"], registry=registry)
        self.queue = Gauge("citybrain_notification_queue", "Notifications waiting for their "
                           "receiver (for Alertmanager: alerts whose state it hasn't got)",
                           ["receiver"], registry=registry)
        for r in receivers:  # every series from the start, so rates and alerts see zeros
            self.queue.labels(r)
            for o in OUTCOMES:
                self.notifications.labels(r, o)


class Notifier:
    def __init__(self, settings: Settings, store: NotifierStore, metrics: NotifierMetrics) -> None:
        self.s, self.store, self.metrics = settings, store, metrics
        self.external_url = settings.external_url or settings.api_url
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=True)

    async def run(self) -> None:
        for url in self.store.forget_receivers(self.s.webhooks):
            self._drop(url, "its URL is no longer in CITYBRAIN_WEBHOOK_URLS")
        work = [self._consume(), self._report()]
        if self.s.webhooks:
            work += [self._flush_groups(), *(self._deliver(url) for url in self.s.webhooks)]
        if self.s.alertmanager_url:
            work.append(self._push_alertmanager())
        tasks = [asyncio.ensure_future(w) for w in work]
        try:
            await asyncio.gather(*tasks)
        finally:  # one failed or we are stopping: the others stop before the store closes
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.http.aclose()

    # ------------------------------------------------------------ alerts in

    async def _consume(self) -> None:
        session_ms = int(self.s.session_timeout_s * 1000)
        topics = self.s.topics
        consumer = AIOKafkaConsumer(
            topics.alerts, topics.incidents, topics.cases, **client_options(self.s.bootstrap),
            group_id=f"{self.s.topic_prefix}notifier", enable_auto_commit=False,
            # A new group starts at the beginning: an alert open before the notifier's first
            # start is notified; one resolved by then is not (see NotifierStore.apply).
            auto_offset_reset="earliest", session_timeout_ms=session_ms, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            heartbeat_interval_ms=max(200, session_ms // 6),
            request_timeout_ms=max(30_000, session_ms * 2))
        hold = HoldBack(self.s.incident_hold_s)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=int(TICK_S * 1000), max_records=1000)
                now = time.time()
                alerts = []
                for tp, records in batches.items():
                    for r in records:
                        if r.value is None:
                            continue  # a tombstone: the alert is gone, nothing to tell
                        try:
                            if tp.topic == topics.cases:
                                alerts.append(parse_case(r.value))
                            elif tp.topic == topics.incidents:
                                incident, members = parse_incident(r.value)
                                self.store.note_members(incident["id"], members, now)
                                if hold.holds(incident, members):
                                    hold.add(tp, r.offset, incident, now)
                                else:
                                    alerts += hold.release(incident["id"]) + [incident]
                            elif hold.holds(alert := parse_alert(r.value)):
                                hold.add(tp, r.offset, alert, now)
                            else:
                                alerts.append(alert)
                        except ValueError as exc:
                            log.warning("%s[%d]@%d skipped: %s", tp.topic, tp.partition, r.offset, exc)
                alerts += hold.due(now)
                if not batches and not alerts:
                    continue
                self.store.apply(alerts, now, grouped=bool(self.s.webhooks))
                try:
                    await consumer.commit(hold.commits({tp: records[-1].offset + 1 for tp, records in batches.items()}))
                except KafkaError as exc:
                    # Those records are read again (after a rebalance, or a restart) and
                    # skipped by their seq: what they brought is already in the store.
                    log.warning("offset commit failed: %s", exc)
        finally:
            await consumer.stop()

    # ------------------------------------------------------------ webhooks

    async def _flush_groups(self) -> None:
        while True:
            now = time.time()
            for key in self.store.due_groups(now, self.s.webhook_group_wait_s, self.s.webhook_group_interval_s):
                group, members = self.store.group(key)
                entries = group_entries(members, self.external_url)
                bodies = [(url, orjson.dumps(webhook_payload(receiver_name(url), group, entries, self.external_url)))
                          for url in self.s.webhooks] if entries else []
                for url in self.store.flushed(key, members, bodies, now):
                    self._drop(url, f"the queue holds CITYBRAIN_NOTIFIER_QUEUE_MAX={self.s.notifier_queue_max}")
            await asyncio.sleep(TICK_S)

    async def _deliver(self, url: str) -> None:
        while True:
            item = self.store.head(url)
            if item is None or item.next_at > time.time():
                await asyncio.sleep(TICK_S)
                continue
            # The key is the same on every attempt: a receiver can tell a repeat (which
            # only a crash between its answer and our note of it can cause).
            result = await self._post(receiver_name(url), url, item.body, {"Idempotency-Key": item.key})
            if result == "failed":
                self.store.retry(item, time.time() + backoff_s(item.attempts + 1, self.s.notifier_retry_max_s))
            else:
                self.store.done(item)

    # ------------------------------------------------------------ Alertmanager

    async def _push_alertmanager(self) -> None:
        assert self.s.alertmanager_url is not None
        url = self.s.alertmanager_url.rstrip("/") + "/api/v2/alerts"
        resend, failures = self.s.alertmanager_resend_s, 0
        while True:
            await asyncio.sleep(backoff_s(failures, self.s.notifier_retry_max_s) if failures else TICK_S)
            now = time.time()
            due = self.store.unpushed(now, resend, PUSH_BATCH)
            if not due:
                continue
            gone, ends = rfc3339(int(now * 1000)), rfc3339(int((now + ENDS_AHEAD * resend) * 1000))
            body = [a for u in due
                    for a in alertmanager_push(u.alert, u.pushed_labels, gone, ends, self.external_url, as_open=u.open)]
            result = await self._post(ALERTMANAGER, url, orjson.dumps(body), {})
            failures = failures + 1 if result == "failed" else 0
            if result != "failed":
                self.store.pushed(due, now)

    # ------------------------------------------------------------ both

    async def _post(self, receiver: str, url: str, body: bytes, headers: dict[str, str]) -> str:
        status: int | None = None
        try:
            response = await self.http.post(url, content=body,
                                            headers={"Content-Type": "application/json", **headers})
            status = response.status_code
            why = f"HTTP {status} {response.text[:200]!r}"
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}"
        result = outcome(status)
        self.metrics.notifications.labels(receiver, result).inc()
        if result == "failed":
            log.warning("%s: delivery failed, will retry: %s", receiver, why)
        elif result == "dropped":
            log.error("%s: notification refused, dropped: %s", receiver, why)
        return result

    def _drop(self, url: str, why: str) -> None:
        log.warning("%s: oldest queued notification dropped: %s", receiver_name(url), why)
        self.metrics.notifications.labels(receiver_name(url), "dropped").inc()

    async def _report(self) -> None:
        while True:
            queued = self.store.queued()
            for url in self.s.webhooks:
                self.metrics.queue.labels(receiver_name(url)).set(queued.get(url, 0))
            if self.s.alertmanager_url:
                self.metrics.queue.labels(ALERTMANAGER).set(
                    self.store.count_unpushed(time.time(), self.s.alertmanager_resend_s))
            await asyncio.sleep(1.0)


class Held(NamedTuple):
    due: float  # when it is told by itself, unless its incident came
    tp: TopicPartition  # where it was read, so that its offset is committed only once told
    offset: int
    alert: Notice


class HoldBack:
    """Alerts an incident may group (a feeder's outage, a device gone offline) wait here
    `hold_s` before they are told by themselves: when their incident comes meanwhile, it
    tells of them instead (NotifierStore.note_members). An incident whose cause stands
    alone so far waits too, and its latest state is told when the wait is over, so its
    first notification counts the devices that went down with the feeder. Offsets are
    committed only below the oldest record still waiting, so a restart reads it again."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        # In read order, so in order of due time; a merged entry keeps its first place.
        self.waiting: dict[str | tuple[TopicPartition, int], Held] = {}
        self.read: dict[TopicPartition, int] = {}

    def holds(self, alert: Notice, members: list[str] | None = None) -> bool:
        """Whether `alert` waits: one an incident may group, or an open incident of
        `members` that has no child yet, or a later open state of one that is waiting."""
        if self.hold_s <= 0:
            return False
        if alert["domain"] == "incident":
            return alert["status"] != "resolved" and (len(members or ()) <= 1 or alert["id"] in self.waiting)
        return alert["rule"] in CAUSES or alert["rule"] in EFFECTS

    def add(self, tp: TopicPartition, offset: int, alert: Notice, now: float) -> None:
        """Hold `alert`, read at `tp`@`offset`. A later state of an incident that is
        waiting replaces it and keeps its place: its due time and its offset."""
        key = alert["id"] if alert["domain"] == "incident" else (tp, offset)
        first = self.waiting.get(key, Held(now + self.hold_s, tp, offset, alert))
        self.waiting[key] = Held(first.due, first.tp, first.offset, alert)

    def release(self, incident: str) -> list[Notice]:
        """The waiting state of `incident`, if any, to be told now (before its closing,
        so an incident that opens and closes within the wait is told both)."""
        held = self.waiting.pop(incident, None)
        return [] if held is None else [held.alert]

    def due(self, now: float) -> list[Notice]:
        out = []
        for key, held in list(self.waiting.items()):
            if held.due > now:
                break
            out.append(held.alert)
            del self.waiting[key]
        return out

    def commits(self, read: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The offsets to commit, given the next offset to read of the partitions just read."""
        self.read.update(read)
        floor: dict[TopicPartition, int] = {}
        for held in self.waiting.values():
            floor[held.tp] = min(held.offset, floor.get(held.tp, held.offset))
        return {tp: min(offset, floor.get(tp, offset)) for tp, offset in self.read.items()}


def receivers(settings: Settings) -> list[str]:
    return [receiver_name(u) for u in settings.webhooks] + ([ALERTMANAGER] if settings.alertmanager_url else [])


async def run_notifier(settings: Settings) -> None:
    if not receivers(settings):
        raise ConfigError("nothing to notify: set CITYBRAIN_WEBHOOK_URLS or CITYBRAIN_ALERTMANAGER_URL")
    port, host = settings.notifier_metrics_port, settings.api_host
    if port and port_in_use(host, port):
        raise ConfigError(f"notifier_metrics_port (CITYBRAIN_NOTIFIER_METRICS_PORT): port {port} on {host} "
                          "is already in use")
    path = settings.data_dir / "notifier.sqlite3"
    store = NotifierStore(path, settings.notifier_queue_max)
    try:
        await ensure_topics(settings)
        registry = CollectorRegistry()
        metrics = NotifierMetrics(registry, receivers(settings))
        if port:
            start_http_server(port, host, registry)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
        log.info("notifying %s; queue in %s", ", ".join(receivers(settings)), path)
        await Notifier(settings, store, metrics).run()
    finally:
        store.close()
