"""The notifier (contract §6) against real parts: the session's embedded broker, a real
Alertmanager (Debian's prometheus-alertmanager) and a real HTTP webhook receiver.

Alerts are produced to the alerts topic here, as the alert manager would; `citybrain
notify` runs as its own process, with short group waits, resends and backoffs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.alert_payloads import (ZERO_TIME, Member, alertmanager_push, fingerprint, group_entries, labels,
                                     parse_alert, webhook_payload)
from services.config import ConfigError, Settings, load
from services.notifier import HoldBack, backoff_s, outcome
from services.notifier_store import NotifierStore
from services.processes import spawn, stop
from tests.conftest import ROOT, Proc, child_env, free_port, produce, wait_for

ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
EXTERNAL = "http://citybrain.example:8000"
FAST = {"CITYBRAIN_WEBHOOK_GROUP_WAIT_S": "0.3", "CITYBRAIN_INCIDENT_HOLD_S": "0", "CITYBRAIN_WEBHOOK_GROUP_INTERVAL_S": "1",
        "CITYBRAIN_ALERTMANAGER_RESEND_S": "1", "CITYBRAIN_NOTIFIER_RETRY_MAX_S": "0.5",
        "CITYBRAIN_EXTERNAL_URL": EXTERNAL}


def alert(aid: str, status: str = "firing", seq: int = 1, *, rule: str = "grid.overload",
          district: str = "市南区", entity: str = "F-0001", severity: str = "major", **extra: Any) -> dict[str, Any]:
    """An alert document as the alert manager publishes it (contract §4, plus seq and history)."""
    doc = {"id": aid, "rule": rule, "domain": rule.split(".")[0], "entity": entity, "severity": severity,
           "status": status, "summary": "load 127% of rated", "value": 1.27, "threshold": 1.0,
           "started_at": "2026-11-21T08:00:00+08:00", "updated_at": "2026-11-21T08:01:00+08:00",
           "resolved_at": "2026-11-21T08:05:00+08:00" if status == "resolved" else None,
           "count": seq, "acked_by": "duty-1" if status == "acknowledged" else None, "seq": seq,
           "history": [{"status": "firing", "at": "2026-11-21T08:00:00+08:00"}],
           "area": {"district": district, "street": "香港中路街道", "community": "c-1", "grid_cell": "g-1"}}
    return {**doc, **extra}


def publish(settings: Settings, *docs: dict[str, Any]) -> None:
    produce(settings, settings.topics.alerts, [(d["id"].encode(), orjson.dumps(d)) for d in docs])


# ---------------------------------------------------------------- pure parts


def test_alert_becomes_labels_annotations_and_a_webhook_entry() -> None:
    a = parse_alert(orjson.dumps(alert("a1", "acknowledged", area=None)))
    assert a["started_at"] == "2026-11-21T00:00:00.000Z"  # UTC, as Alertmanager answers
    assert labels(a) == {"alertname": "grid.overload", "severity": "major", "domain": "grid",
                         "entity": "F-0001", "district": "unassigned", "street": "unassigned",
                         "community": "unassigned", "grid_cell": "unassigned", "alert_id": "a1"}
    (entry,) = group_entries([Member(a, None, None)], EXTERNAL) or []
    assert entry["status"] == "firing" and entry["endsAt"] == ZERO_TIME  # acknowledged still fires
    assert entry["annotations"] == {"summary": "load 127% of rated", "citybrain_status": "acknowledged",
                                    "value": "1.27", "threshold": "1.0", "count": "1", "acked_by": "duty-1"}
    assert entry["generatorURL"] == f"{EXTERNAL}/api/v1/alerts/a1"
    assert entry["fingerprint"] == fingerprint(labels(a))
    for bad in (b"[]", b"{", orjson.dumps(alert("a1", "open")), orjson.dumps(alert("a1", started_at="soon")),
                orjson.dumps({**alert("a1"), "rule": None})):
        with pytest.raises(ValueError):
            parse_alert(bad)


def test_what_a_group_tells_and_when() -> None:
    def doc(status: str, seq: int, **kw: Any) -> dict[str, Any]:
        return parse_alert(orjson.dumps(alert("a1", status, seq, **kw)))

    firing = doc("firing", 1)
    told = (firing["status"], labels(firing))
    assert group_entries([Member(firing, None, None)], EXTERNAL)  # a new alert
    assert group_entries([Member(doc("firing", 2), *told)], EXTERNAL) is None  # only its count moved
    assert group_entries([Member(doc("acknowledged", 3), *told)], EXTERNAL)  # someone took it
    # Resolved before any notification told it fired: it is told firing now, its resolution next.
    (first,) = group_entries([Member(doc("resolved", 2), None, None)], EXTERNAL) or []
    assert first["status"] == "firing" and first["endsAt"] == ZERO_TIME
    (gone,) = group_entries([Member(doc("resolved", 2), *told)], EXTERNAL) or []
    assert gone["status"] == "resolved" and gone["endsAt"] == "2026-11-21T00:05:00.000Z"
    # Escalation changes the severity label: the label set told before is resolved beside the new one.
    old, new = group_entries([Member(doc("firing", 3, severity="critical"), *told)], EXTERNAL) or []
    assert (old["status"], old["labels"]["severity"], new["status"], new["labels"]["severity"]) == \
        ("resolved", "major", "firing", "critical")
    assert old["fingerprint"] != new["fingerprint"]

    other = parse_alert(orjson.dumps(alert("a2", entity="F-0002")))
    entries = group_entries([Member(firing, None, None), Member(other, None, None)], EXTERNAL) or []
    payload = webhook_payload("hooks:9/x", {"alertname": "grid.overload", "district": "市南区"}, entries, EXTERNAL)
    assert payload["groupKey"] == '{}:{alertname="grid.overload", district="市南区"}'
    assert payload["status"] == "firing" and payload["version"] == "4"
    assert "entity" not in payload["commonLabels"] and payload["commonLabels"]["district"] == "市南区"


def test_alertmanager_gets_the_state_and_the_end_of_an_old_label_set() -> None:
    now, ahead = "2026-11-21T01:00:00.000Z", "2026-11-21T01:04:00.000Z"
    major = parse_alert(orjson.dumps(alert("a1")))
    (sent,) = alertmanager_push(major, None, now, ahead, EXTERNAL)
    assert sent.keys() == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert sent["endsAt"] == ahead
    old, new = alertmanager_push(parse_alert(orjson.dumps(alert("a1", seq=2, severity="critical"))),
                                 labels(major), now, ahead, EXTERNAL)
    assert (old["labels"]["severity"], old["endsAt"], new["labels"]["severity"]) == ("major", now, "critical")
    (done,) = alertmanager_push(parse_alert(orjson.dumps(alert("a1", "resolved", 2))), labels(major), now, ahead,
                                EXTERNAL)
    assert done["endsAt"] == "2026-11-21T00:05:00.000Z"
    # Event time ahead of the clock: Alertmanager refuses an end before the start.
    (early,) = alertmanager_push(major, None, now, "2020-01-01T00:00:00.000Z", EXTERNAL)
    assert early["endsAt"] == early["startsAt"]


def test_retry_policy() -> None:
    assert [backoff_s(n, 60) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 60]
    assert [outcome(s) for s in (200, 204, None, 503, 429, 408, 400, 404)] == \
        ["delivered"] * 2 + ["failed"] * 4 + ["dropped"] * 2


def test_a_lone_cause_incident_waits_for_its_devices_and_a_short_one_is_told_both_ways() -> None:
    from aiokafka import TopicPartition
    tp = TopicPartition("citybrain.incidents", 0)
    hold = HoldBack(hold_s=10)
    incident = {"id": "i-1", "domain": "incident", "rule": "incident.feeder_outage", "status": "firing"}
    # Its cause alone: it waits; the state with its devices replaces it and keeps its place.
    assert hold.holds(incident, ["outage"])
    hold.add(tp, 5, {**incident, "count": 1}, now=100.0)
    assert hold.holds(incident, ["outage", "g1", "g2"])
    hold.add(tp, 6, {**incident, "count": 3}, now=104.0)
    assert hold.commits({tp: 7}) == {tp: 5}
    assert hold.due(109.0) == []
    assert hold.due(110.0) == [{**incident, "count": 3}]
    assert hold.commits({tp: 7}) == {tp: 7}
    # One that already groups devices is told at once; one that closes within the wait
    # is told opening, then closing.
    assert not hold.holds({**incident, "id": "i-2"}, ["outage", "g1"])
    hold.add(tp, 8, {**incident, "id": "i-3"}, now=120.0)
    closed = {**incident, "id": "i-3", "status": "resolved"}
    assert not hold.holds(closed, ["outage"])
    assert hold.release("i-3") == [{**incident, "id": "i-3"}] and hold.release("i-3") == []
    assert not HoldBack(hold_s=0).holds(incident, ["outage"])


def test_queue_is_bounded_ordered_survives_reopening_and_has_one_owner(tmp_path: Path) -> None:
    store = NotifierStore(tmp_path / "n.sqlite3", queue_max=3)
    a = parse_alert(orjson.dumps(alert("a1")))
    store.apply([a], now=0.0, grouped=True)
    (key,) = store.due_groups(now=20.0, wait_s=10, interval_s=60)
    _, members = store.group(key)
    dropped = store.flushed(key, members, [("http://h/1", b"%d" % i) for i in range(5)], now=20.0)
    assert dropped == ["http://h/1", "http://h/1"]  # the two oldest
    store.close()
    store = NotifierStore(tmp_path / "n.sqlite3", queue_max=3)
    assert store.queued() == {"http://h/1": 3}
    with pytest.raises(ConfigError, match="in use by another notifier"):
        NotifierStore(tmp_path / "n.sqlite3", queue_max=3)
    head = store.head("http://h/1")
    assert head is not None and head.body == b"2"
    assert store.due_groups(now=21.0, wait_s=10, interval_s=60) == []  # told, and nothing changed since
    store.close()


# ---------------------------------------------------------------- real receivers


class Receiver:
    """A webhook receiver on a fixed port, recording what it is sent; it can be down."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> "Receiver":
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers["Idempotency-Key"], orjson.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def statuses(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """Each notification as (group key, status, [(alert id, status)])."""
        return [(p["groupKey"], p["status"], [(e["labels"]["alert_id"], e["status"]) for e in p["alerts"]])
                for _, p in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.down()


@contextmanager
def running_alertmanager(work: Path, config: str) -> Iterator[str]:
    """A real Alertmanager with `config` as its alertmanager.yml; yields its URL."""
    assert ALERTMANAGER_BIN.exists(), "needs Debian's prometheus-alertmanager (.ci/run installs it)"
    (work / "alertmanager.yml").write_text(config)
    url = f"http://127.0.0.1:{free_port()}"
    with open(work / "log", "ab") as log:
        proc = spawn([str(ALERTMANAGER_BIN), f"--config.file={work / 'alertmanager.yml'}",
                      f"--storage.path={work / 'data'}", f"--web.listen-address={url[7:]}",
                      "--cluster.listen-address="], env={}, cwd=work, output=log)
    try:
        wait_for(lambda: _status(url + "/-/ready") == 200, timeout=20)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def alertmanager(processes: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_alertmanager(tmp_path_factory.mktemp("alertmanager"),
                              "route: {receiver: none}\nreceivers: [{name: none}]\n") as url:
        yield url


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def am_alerts(url: str, test_id: str) -> dict[str, dict[str, Any]]:
    """Alertmanager's active alerts of one test, by alert id."""
    found = httpx.get(url + "/api/v2/alerts", params={"filter": f'alert_id=~"{test_id}.*"'}).json()
    return {a["labels"]["alert_id"]: a for a in found}


@pytest.fixture
def notifier(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(**env: str) -> Proc:
        p = Proc(["notify"], child_env(settings, **{**FAST, **env}), tmp_path / f"notifier-{len(procs)}.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


def metric(port: int, name: str, **want: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and want.items() <= s.labels.items())


def test_alerts_reach_alertmanager_and_webhooks_then_resolve(
        settings: Settings, alertmanager: str, receiver: Receiver, notifier: Callable[..., Proc]) -> None:
    t = uuid.uuid4().hex[:8]
    receiver.up()
    port = free_port()
    # A group wait long enough for alerts produced together to be read together: on a
    # 3-broker cluster (the Kafka tier) their partitions' leaders answer in separate fetches.
    notifier(CITYBRAIN_ALERTMANAGER_URL=alertmanager, CITYBRAIN_WEBHOOK_URLS=receiver.url,
             CITYBRAIN_NOTIFIER_METRICS_PORT=str(port), CITYBRAIN_WEBHOOK_GROUP_WAIT_S="2")
    a, b = alert(f"{t}-a"), alert(f"{t}-b", "acknowledged", entity="F-0002")
    c = alert(f"{t}-c", rule="grid.outage", severity="critical", district="崂山区")
    publish(settings, a, b, c)

    # Alertmanager: every open alert, with its labels and the fingerprint we compute.
    pushed = wait_for(lambda: len(got := am_alerts(alertmanager, t)) == 3 and got, timeout=20)
    for doc in (a, b, c):
        mine = parse_alert(orjson.dumps(doc))
        theirs = pushed[doc["id"]]
        assert theirs["labels"] == labels(mine) and theirs["fingerprint"] == fingerprint(labels(mine))
        assert theirs["startsAt"] == "2026-11-21T00:00:00.000Z" and theirs["generatorURL"].startswith(EXTERNAL)
    assert pushed[b["id"]]["annotations"]["citybrain_status"] == "acknowledged"

    # Webhooks: one v4 notification per (rule, district) group.
    wait_for(lambda: len(receiver.received) == 2, timeout=20)
    by_group = {p["groupKey"]: p for _, p in receiver.received}
    shinan = by_group['{}:{alertname="grid.overload", district="市南区"}']
    assert shinan["version"] == "4" and shinan["status"] == "firing" and shinan["truncatedAlerts"] == 0
    assert shinan["receiver"] == f"127.0.0.1:{receiver.port}/hook" and shinan["externalURL"] == EXTERNAL
    assert shinan["groupLabels"] == {"alertname": "grid.overload", "district": "市南区"}
    assert {"alertname", "severity", "domain", "district", "street", "community", "grid_cell"} <= \
        shinan["commonLabels"].keys()
    assert sorted((e["labels"]["entity"], e["status"], e["annotations"]["citybrain_status"])
                  for e in shinan["alerts"]) == [("F-0001", "firing", "firing"), ("F-0002", "firing", "acknowledged")]
    for e in shinan["alerts"]:
        assert {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"} <= e.keys()

    # Re-sent while open: Alertmanager sees a later update of b without any change of ours.
    first_update = pushed[b["id"]]["updatedAt"]
    wait_for(lambda: am_alerts(alertmanager, t)[b["id"]]["updatedAt"] > first_update, timeout=10)

    publish(settings, alert(f"{t}-a", "resolved", 2), alert(f"{t}-c", "resolved", 2, rule="grid.outage",
                                                            severity="critical", district="崂山区"))
    wait_for(lambda: am_alerts(alertmanager, t).keys() == {b["id"]}, timeout=20)
    wait_for(lambda: len(receiver.received) == 4, timeout=20)
    assert sorted(receiver.statuses()[2:]) == [
        ('{}:{alertname="grid.outage", district="崂山区"}', "resolved", [(c["id"], "resolved")]),
        ('{}:{alertname="grid.overload", district="市南区"}', "firing", [(a["id"], "resolved"), (b["id"], "firing")])]
    resolved = next(e for _, p in receiver.received[2:] for e in p["alerts"] if e["labels"]["alert_id"] == a["id"])
    assert resolved["endsAt"] == "2026-11-21T00:05:00.000Z"
    assert metric(port, "citybrain_notifications_total", receiver=shinan["receiver"], outcome="delivered") == 4
    assert metric(port, "citybrain_notifications_total", receiver="alertmanager", outcome="delivered") >= 2


def test_an_alert_that_fires_and_resolves_within_the_group_wait_is_told_firing_then_resolved(
        settings: Settings, receiver: Receiver, notifier: Callable[..., Proc], tmp_path: Path) -> None:
    # Alertmanager notifies a webhook of its own: what its routes do with what it was sent.
    behind = Receiver().up()
    config = ("route: {receiver: hook, group_by: [alert_id], group_wait: 200ms, group_interval: 1s}\n"
              f"receivers: [{{name: hook, webhook_configs: [{{url: '{behind.url}'}}]}}]\n")
    try:
        with running_alertmanager(tmp_path, config) as url:
            receiver.up()
            notifier(CITYBRAIN_ALERTMANAGER_URL=url, CITYBRAIN_WEBHOOK_URLS=receiver.url)
            fever = f"{uuid.uuid4().hex[:8]}-fever"
            gate = {"rule": "gate.fever", "entity": "G-0007", "severity": "critical"}
            publish(settings, alert(fever, **gate), alert(fever, "resolved", 2, **gate))  # within 0.3 s

            told = [("firing", [(fever, "firing")]), ("resolved", [(fever, "resolved")])]
            wait_for(lambda: len(receiver.received) == 2, timeout=20)
            assert [s[1:] for s in receiver.statuses()] == told
            assert receiver.received[0][1]["alerts"][0]["endsAt"] == ZERO_TIME
            wait_for(lambda: len(behind.received) == 2, timeout=20)
            assert [s[1:] for s in behind.statuses()] == told
            time.sleep(1.5)  # a group interval: nothing more comes
            assert len(receiver.received) == len(behind.received) == 2
    finally:
        behind.down()


def test_a_receiver_down_for_a_while_gets_every_notification_once(
        settings: Settings, receiver: Receiver, notifier: Callable[..., Proc]) -> None:
    port = free_port()
    notifier(CITYBRAIN_WEBHOOK_URLS=receiver.url, CITYBRAIN_NOTIFIER_METRICS_PORT=str(port))
    name = f"127.0.0.1:{receiver.port}/hook"
    publish(settings, alert("x"))
    wait_for(lambda: metric(port, "citybrain_notification_queue", receiver=name) == 1, timeout=20)
    publish(settings, alert("x", "resolved", 2))
    wait_for(lambda: metric(port, "citybrain_notification_queue", receiver=name) == 2, timeout=20)
    wait_for(lambda: metric(port, "citybrain_notifications_total", receiver=name, outcome="failed") >= 5,
             timeout=20)  # retried with backoff all along

    receiver.up()
    wait_for(lambda: len(receiver.received) == 2, timeout=20)
    time.sleep(1.5)  # three backoff caps: time for any duplicate to arrive
    group = '{}:{alertname="grid.overload", district="市南区"}'
    assert receiver.statuses() == [(group, "firing", [("x", "firing")]), (group, "resolved", [("x", "resolved")])]
    assert len({key for key, _ in receiver.received}) == 2
    wait_for(lambda: metric(port, "citybrain_notification_queue", receiver=name) == 0, timeout=5)


def test_a_killed_notifier_keeps_its_queued_notifications(
        settings: Settings, receiver: Receiver, notifier: Callable[..., Proc], tmp_path: Path) -> None:
    port = free_port()
    first = notifier(CITYBRAIN_WEBHOOK_URLS=receiver.url, CITYBRAIN_NOTIFIER_METRICS_PORT=str(port))
    name = f"127.0.0.1:{receiver.port}/hook"
    publish(settings, alert("k1"), alert("k2", district="黄岛区"))
    wait_for(lambda: metric(port, "citybrain_notification_queue", receiver=name) == 2, timeout=20)
    first.kill()

    notifier(CITYBRAIN_WEBHOOK_URLS=receiver.url)
    receiver.up()
    wait_for(lambda: len(receiver.received) == 2, timeout=20)
    time.sleep(1.5)  # the restarted notifier re-reads nothing it had committed
    assert sorted(receiver.statuses()) == [
        ('{}:{alertname="grid.overload", district="市南区"}', "firing", [("k1", "firing")]),
        ('{}:{alertname="grid.overload", district="黄岛区"}', "firing", [("k2", "firing")])]


# ---------------------------------------------------------------- commands


def test_webhook_urls_are_a_comma_separated_list() -> None:
    assert load({"CITYBRAIN_WEBHOOK_URLS": " http://a/x ,https://b:8443/y"}).webhooks == \
        ["http://a/x", "https://b:8443/y"]


def test_notify_needs_a_receiver(processes: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    r = subprocess.run([sys.executable, "-m", "services.cli", "notify"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("citybrain: error: nothing to notify: set CITYBRAIN_WEBHOOK_URLS or "
                                "CITYBRAIN_ALERTMANAGER_URL")


def test_up_starts_the_notifier_when_a_receiver_is_set(processes: None, tmp_path: Path, receiver: Receiver) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(CITYBRAIN_SESSION_TIMEOUT_S="2", CITYBRAIN_WEBHOOK_URLS=receiver.url)
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--broker-port", str(free_port()),
                             "--api-port", str(free_port()), "--data-dir", str(tmp_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (tmp_path / "notifier.sqlite3").exists(), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "notifier on" in out
