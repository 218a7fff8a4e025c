"""Prometheus metrics of one app: requests by route and status, their latency, and jobs
created; GET /metrics renders them with the store's job counts by status.

Each app has its own registry (not prometheus_client's global one), so that several apps
in one process (tests) neither collide on metric names nor count each other's requests.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.jobs = Gauge(
            "descent_jobs",
            "Jobs in the store by status, read at each scrape",
            ["status"],
            registry=self.registry,
        )


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
