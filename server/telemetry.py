"""Prometheus metrics of one app: requests by route and status, their latency, and jobs
created; GET /metrics renders them with the store's job counts by status.

Each app has its own registry (not prometheus_client's global one), so that several apps
in one process (tests) neither collide on metric names nor count each other's requests.

`descent serve` runs several API processes, each with its own app: it sets
PROMETHEUS_MULTIPROC_DIR before any of them imports prometheus_client, so that their
counters live in files there (prometheus_client's multiprocess mode), and a scrape, which
any one process answers, sums every process's. The job counts are read from the store at
each scrape and rendered as they are: not a multiprocess value, which would keep one
series a process (or a sum of them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# prometheus_client's own switch; read when it is imported, so set before that
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class JobCounts:
    """A collector of the jobs by status that one scrape read from the store."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "descent_jobs", "Jobs in the store by status, read at each scrape", labels=["status"]
        )
        for status, count in self.counts.items():
            family.add_metric([status], count)
        yield family


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
        self.requests = Counter(
            "descent_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "descent_http_request_duration_seconds",
            "Time from a request's arrival to its response's start, by route template",
            ["route"],
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "descent_jobs_created", "Jobs accepted by POST /jobs", registry=self.registry
        )

    def render(self, job_counts: Mapping[str, int] | None) -> bytes:
        """The Prometheus text of every API process's metrics (this one's alone outside
        multiprocess mode), with `job_counts` (None: the store did not answer)."""
        scrape = CollectorRegistry()
        if self.multiprocess_dir is not None:
            MultiProcessCollector(scrape, path=self.multiprocess_dir)
        else:
            scrape.register(self.registry)
        if job_counts is not None:
            scrape.register(JobCounts(job_counts))
        return generate_latest(scrape)


class RequestMetrics:
    """ASGI middleware that counts every response, including the ones middleware and
    exception handlers give. The route label is the route's template (/api/v1/jobs/{id}),
    never the raw path, so that ids do not make a new time series each."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                self.telemetry.latency.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.telemetry.requests.labels(scope["method"], route, str(status)).inc()
