"""Several workers and several API replicas on one machine serve one consistent city."""

from __future__ import annotations

from typing import Any, Callable

from services.config import Settings
from tests.conftest import Api, Proc, read_all, wait_for
from tests.test_stream_engine import expected, generate, produce_all, records, windows_match


def test_two_workers_and_two_api_replicas_give_the_same_answers(
        settings: Settings, start_worker: Callable[..., Proc], start_api: Callable[[], Api]) -> None:
    workers = [start_worker("a"), start_worker("b")]
    apis = [start_api(), start_api()]
    events = generate(3000, seed=31, delay_s=0)
    ref, late = expected(events, settings.partitions)
    produce_all(settings, records(events, 1, settings.partitions))
    wait_for(lambda: windows_match(settings, ref), timeout=90, every=1.0)

    def answers(api: Api) -> dict[str, Any]:
        overview = api.get("/api/v1/overview").json()
        return {
            "counts": {d: (v["events"], v["records"]) for d, v in overview["domains"].items()},
            "city": {d: v["city"]["figures"] for d, v in overview["domains"].items()},
            "entity": api.get("/api/v1/entities/traffic/T-0001").json()["windows"],
        }

    want = sum(doc["events"] for doc in ref.values())
    for api in apis:
        wait_for(lambda: sum(c[0] for c in answers(api)["counts"].values()) == want, timeout=30)
    # Each replica reads the live figures at its own pace (a fetch may wait a second, and
    # area shares are published every 5 s): once both have caught up they agree, on the
    # reference's figures.
    city_events = {domain: sum(doc["events"] for (d, _, ws), doc in ref.items()
                               if d == domain and ws == max(w for dd, _, w in ref if dd == domain))
                   for domain in {d for d, _, _ in ref}}

    def caught_up(a: dict[str, Any]) -> bool:
        return all(a["city"][domain]["events"] == n for domain, n in city_events.items())

    first = wait_for(lambda: (a := answers(apis[0])) == answers(apis[1]) and caught_up(a) and a, timeout=30)
    for domain, city in first["city"].items():
        assert city["events"] == city_events[domain]
    assert len(first["entity"]) > 0
    latest = {key: doc for key, doc in read_all(settings, settings.topics.vitals)}
    assert len({doc["worker"] for doc in latest.values()}) == len(workers)  # both own partitions
