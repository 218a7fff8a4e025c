"""The reaper: no lost broker message or dead worker may strand a job.

`sweep` looks at the store, the truth, and publishes again what no worker will take
otherwise:

- a running job whose lease expired (its worker died, e.g. SIGKILL): back to queued
  and published, so another worker claims it and resumes from its newest checkpoint;
  one out of attempts fails instead, and a cancelling one ends cancelled (nobody is
  left to stop it);
- a job still queued and unclaimed after settings.queued_timeout_seconds (its message
  was lost or never sent): published again, and marked so that it waits another
  timeout before the next try.

Duplicates are harmless: claim_job lets exactly one delivery run the job. `Reaper`
runs `sweep` every settings.reaper_interval_seconds in a thread of the API process
(`descent serve`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from jobs.settings import Settings
from jobs.store import repository as repo
from jobs.store.models import JobStatus, utcnow
from jobs.store.models import Queue as QueueName

log = logging.getLogger("descent.reaper")


class Publisher(Protocol):
    """What the reaper needs of a queue (server.job_queue.JobQueue has this method)."""

    def publish(self, job_id: str, queue: QueueName, priority: int) -> None: ...


def sweep(
    session_factory: Callable[[], Session],
    queue: Publisher,
    now: datetime,
    settings: Settings,
) -> list[str]:
    """One pass over the store; the ids of the jobs it published."""
    published: list[str] = []
    with session_factory() as session:
        for job in repo.expired_leases(session, now):
            if job.status == JobStatus.cancelling:
                repo.finish_job(session, job.id, JobStatus.cancelled)
                log.info("job %s: cancelled (its worker stopped renewing the lease)", job.id)
            elif job.attempts >= job.max_attempts:
                repo.finish_job(
                    session,
                    job.id,
                    JobStatus.failed,
                    error=f"its worker stopped renewing the lease on attempt {job.attempts} "
                    f"of {job.max_attempts}; giving up",
                )
                log.warning("job %s: failed, out of attempts", job.id)
            elif repo.requeue_expired(session, job.id, now):
                queue.publish(job.id, job.queue, job.priority)
                published.append(job.id)
                log.info("job %s: lease expired; published again", job.id)
        stale = repo.stale_queued(session, now, settings.queued_timeout_seconds)
        for job in stale:
            queue.publish(job.id, job.queue, job.priority)
            log.info(
                "job %s: unclaimed for %ss; published again",
                job.id,
                settings.queued_timeout_seconds,
            )
        if stale:
            repo.touch_queued(session, [job.id for job in stale], now)
        published.extend(job.id for job in stale)
    return published


class Reaper:
    """`sweep` every settings.reaper_interval_seconds in a daemon thread."""

    def __init__(
        self, session_factory: Callable[[], Session], queue: Publisher, settings: Settings
    ) -> None:
        self.session_factory = session_factory
        self.queue = queue
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="descent-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reaper_interval_seconds):
            try:
                sweep(self.session_factory, self.queue, utcnow(), self.settings)
            except Exception:
                # a database or broker hiccup: the next sweep tries again
                log.exception("reaper sweep failed")
