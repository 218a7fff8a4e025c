"""The seam between the API and whatever runs jobs: a `JobQueue` on `app.state`.

POST /jobs creates the job row (status queued) and then calls `publish`. The row is the
truth, the message only a wake-up call: a publish that fails or is lost leaves a queued
row, which the worker slice's reaper publishes again (repository.stale_queued), so
`publish` may be called more than once for a job and must never be needed for
correctness. That is also why the API answers 201 even when publishing fails.

Until the worker slice plugs in its Celery-backed queue (`create_app(job_queue=...)`),
`StoreQueue` is the default: it publishes nothing, because the job is already recorded
as queued in the store, where a worker (or a test standing in for one) claims it with
repository.claim_job. server never imports workers (DESIGN.md): the worker slice hands
its implementation in from the outside (descent serve).
"""

from __future__ import annotations

from typing import Protocol

from jobs.store.models import Queue


class JobQueue(Protocol):
    def publish(self, job_id: str, queue: Queue, priority: int) -> None:
        """Tell the workers of `queue` that job `job_id` waits; may raise on a broker
        error (the caller logs it and relies on the reaper)."""

    def ready(self) -> bool:
        """Whether the broker is reachable, for GET /readyz."""


class StoreQueue:
    """The default: the store's queued row is the whole message (see the module doc)."""

    def publish(self, job_id: str, queue: Queue, priority: int) -> None:
        pass

    def ready(self) -> bool:
        return True
