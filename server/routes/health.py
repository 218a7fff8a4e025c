"""Liveness, readiness and Prometheus metrics, at the root (outside /api/v1), without a key:
probes and scrapers carry none."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from jobs.store.models import Job, JobStatus
from server.deps import JobQueueDep, SessionDep
from server.telemetry import Telemetry

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers; says nothing about the database."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "a dependency is down"}},
)
def readyz(session: SessionDep, job_queue: JobQueueDep, response: Response) -> dict[str, Any]:
    """Whether this instance can serve: the database answers and the broker is reachable."""
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as e:
        checks["database"] = f"unreachable: {type(e).__name__}"
    try:
        checks["broker"] = "ok" if job_queue.ready() else "unreachable"
    except Exception as e:  # any broker client error means "not ready", never a 500
        checks["broker"] = f"unreachable: {type(e).__name__}"
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ok" if ready else "unavailable", "checks": checks}


@router.get("/metrics", response_class=Response)
def metrics(request: Request, session: SessionDep) -> Response:
    """Prometheus text: request counts and latencies, jobs created (of every API process),
    jobs by status."""
    telemetry: Telemetry = request.app.state.telemetry
    try:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    except SQLAlchemyError:
        # the request metrics still matter while the database is down; readyz reports it
        counts = None
    job_counts = None if counts is None else {each.value: counts.get(each, 0) for each in JobStatus}
    return Response(telemetry.render(job_counts), media_type=CONTENT_TYPE_LATEST)
