"""Prometheus metrics of the API process, including the city's counts from the read models."""

from __future__ import annotations

import time
from itertools import accumulate
from typing import Iterator

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from api.cases import CaseView, kpis
from api.views import ReadModels
from streams.topics import LATENCY_BUCKETS


class ReadModelCollector:
    """City-wide counters summed over every worker's published progress, so one scrape of
    any API replica shows the whole consumer group."""

    def __init__(self, views: ReadModels) -> None:
        self.views = views

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("citybrain_events", "Events processed by the stream workers",
                                     labels=["domain", "outcome"])
        records = CounterMetricFamily("citybrain_records", "Kafka records consumed", labels=["domain"])
        deadletters = CounterMetricFamily("citybrain_deadletters", "Records and events sent to the "
                                          "dead-letter topic", labels=["domain", "reason"])
        closes = CounterMetricFamily("citybrain_window_closes", "Entity windows closed", labels=["domain"])
        lag = GaugeMetricFamily("citybrain_consumer_lag", "Records in the event topic not yet "
                                "processed, as of each partition's latest report", labels=["domain"])
        future = CounterMetricFamily("citybrain_events_future", "Events dead-lettered for a timestamp "
                                     "further ahead of the receiving clock than the allowed skew", labels=["domain"])
        ahead = GaugeMetricFamily("citybrain_clock_ahead_seconds", "How far ahead of the worker's clock "
                                  "an entity's newest event was stamped (entities over 10 s ahead)",
                                  labels=["domain", "entity"])
        for doc in self.views.vitals.partitions.values():
            for entity, seconds in (doc.get("clock_ahead_s") or {}).items():
                ahead.add_metric([str(doc.get("domain")), entity], seconds)
        for domain, t in self.views.vitals.totals().items():
            future.add_metric([domain], t["future"])
            events.add_metric([domain, "valid"], t["events"])
            events.add_metric([domain, "rejected"], t["rejected"])
            events.add_metric([domain, "late"], t["late"])
            deadletters.add_metric([domain, "invalid"], t["rejected"])
            deadletters.add_metric([domain, "late"], t["late"])
            records.add_metric([domain], t["records"])
            closes.add_metric([domain], t["closes"])
            lag.add_metric([domain], t["lag"])
        yield from (events, records, deadletters, closes, lag, future, ahead)
        latency = HistogramMetricFamily("citybrain_processing_latency_seconds", "From a record's "
                                        "Kafka timestamp to its batch processed", labels=["domain"])
        for domain, lat in self.views.vitals.latency().items():
            cumulative = list(accumulate(lat.counts))
            bounds = [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]
            latency.add_metric([domain], list(zip(bounds, cumulative)), lat.total_s)
        yield latency
        by_state = GaugeMetricFamily("citybrain_alerts", "Alerts by status and severity",
                                     labels=["status", "severity"])
        counts: dict[tuple[str, str], int] = {}
        for a in self.views.alerts.alerts.values():
            counts[(a["status"], a["severity"])] = counts.get((a["status"], a["severity"]), 0) + 1
        for (status, severity), n in sorted(counts.items()):
            by_state.add_metric([status, severity], n)
        yield by_state
        open_ = GaugeMetricFamily("citybrain_alerts_open", "Open (firing or acknowledged) alerts "
                                  "by severity", labels=["severity"])
        for severity, n in self.views.alerts.open_counts()["by_severity"].items():
            open_.add_metric([severity], n)
        yield open_
        ready = GaugeMetricFamily("citybrain_view_caught_up", "1 when a read model has caught up "
                                  "with its topic", labels=["topic"])
        for topic, ok in self.views.ready.items():
            ready.add_metric([topic], 1.0 if ok else 0.0)
        yield ready


class CaseCollector:
    """The cases' KPIs (contract §8) per district and per street, the levels a city
    reports its closure rate on (grid cells and communities would be thousands of series;
    the area route has them)."""

    LEVELS = ("district", "street")

    def __init__(self, cases: CaseView) -> None:
        self.cases = cases

    def collect(self) -> Iterator[Metric]:
        now = int(time.time() * 1000)
        families = {
            "opened": CounterMetricFamily("citybrain_cases_opened", "Cases opened in the area", labels=["level", "area"]),
            "closed": CounterMetricFamily("citybrain_cases_closed", "Cases of the area closed", labels=["level", "area"]),
            "closure_rate": GaugeMetricFamily("citybrain_cases_closure_rate", "Closed cases over opened ones",
                                              labels=["level", "area"]),
            "on_time_rate": GaugeMetricFamily("citybrain_cases_on_time_rate", "Cases closed on time (never "
                                              "escalated) over closed ones", labels=["level", "area"]),
            "mean_accept_s": GaugeMetricFamily("citybrain_cases_accept_seconds_mean", "Mean time from a case's "
                                               "opening to its acceptance", labels=["level", "area"]),
            "mean_close_s": GaugeMetricFamily("citybrain_cases_close_seconds_mean", "Mean time from a case's "
                                              "opening to its closing", labels=["level", "area"]),
            "overdue": GaugeMetricFamily("citybrain_cases_overdue", "Open cases past their time to accept or "
                                         "handle now", labels=["level", "area"]),
        }
        by_area: dict[tuple[str, str], list[dict]] = {}
        for c in self.cases.cases.values():
            for level in self.LEVELS:
                by_area.setdefault((level, c["area"].get(level) or "unassigned"), []).append(c)
        for (level, area), cases in sorted(by_area.items()):
            for name, value in kpis(cases, now).items():
                if value is not None:
                    families[name].add_metric([level, area], value)
        yield from families.values()


# Every method the API or a browser's preflight uses; anything else is refused before
# routing, counted as `other`, so made-up method names can't add a series each.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics(BaseHTTPMiddleware):
    def __init__(self, app, registry: CollectorRegistry) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app)
        self.requests = Counter("citybrain_http_requests", "HTTP requests",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("citybrain_http_request_seconds", "HTTP request latency",
                                 ["route"], registry=registry)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = time.perf_counter()
        if request.method in METHODS:
            response = await call_next(request)
            method = request.method
        else:
            response = JSONResponse({"detail": "method not allowed"}, status_code=405)
            method = "other"
        # The route template, not the path, so ids in paths don't explode label cardinality.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.requests.labels(route, method, str(response.status_code)).inc()
        self.latency.labels(route).observe(time.perf_counter() - start)
        return response


def exposition(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
