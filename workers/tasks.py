"""`run_job(job_id)`: claim a job in the store, train it in a child process, supervise it.

The task is idempotent: the job row decides. A delivery that cannot claim the job (a
live lease elsewhere, a finished or cancelled job) is acknowledged, dropped and
counted. The claimer trains in `python -m workers.runner` (workers/runner.py), not in
the pool: the child writes metrics, checkpoints and the outcome, while this task keeps
the lease alive and relays what the child cannot see:

- every lease/3 seconds, renew_lease: "cancelling" → SIGTERM the child (it checkpoints
  and ends the job cancelled); None (the lease is lost, another worker owns the job
  now) → SIGKILL the child before it writes another checkpoint into the shared folder;
- the worker's warm shutdown (SIGTERM) → SIGTERM the child, which checkpoints and hands
  the job back queued; the task publishes it again for another worker;
- a child still running settings.stop_grace_seconds after that SIGTERM is killed; a
  cancelled job then ends cancelled, and a shutting-down worker's job is handed back all
  the same (the next worker resumes it from its newest checkpoint);
- a child that dies without finishing the job (a signal, a crash) fails the job with
  the tail of its log, so the worker lives on.

Celery's `revoke(terminate=True)` is never used: cancelling is cooperative.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from celery.signals import worker_shutting_down
from sqlalchemy.orm import Session, sessionmaker

from jobs.paths import job_dir, job_log
from jobs.settings import get_settings
from jobs.store import make_engine, make_session_factory
from jobs.store import repository as repo
from jobs.store.models import FINISHED, Job, JobStatus, utcnow
from workers.celery_app import app
from workers.gpus import (
    CUDA_VISIBLE_DEVICES,
    NotEnoughGpus,
    cuda_visible_devices,
    gpus_needed,
    worker_pool,
)
from workers.runner import EXIT_HANDED_BACK

log = logging.getLogger("descent.worker")

LOG_TAIL_BYTES = 2000

_shutting_down = threading.Event()
_dropped = itertools.count(1)


@worker_shutting_down.connect
def _on_shutdown(**_kwargs: Any) -> None:
    _shutting_down.set()


@cache
def _sessions() -> sessionmaker[Session]:
    return make_session_factory(make_engine(get_settings().database_url))


def worker_id() -> str:
    """Unique per task run: a lease names exactly one supervisor."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


def publish(job_id: str, queue: str, priority: int) -> None:
    # Redis pops priority 0 first; a spec's priority 9 is the most urgent
    run_job.apply_async((job_id,), queue=queue, priority=9 - priority)


@app.task(name="descent.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    """Trains job `job_id` if this delivery can claim it; returns what happened."""
    settings = get_settings()
    me = worker_id()
    with _sessions()() as session:
        job = _job(session, job_id)
        if job is None or job.status in FINISHED:
            return _not_claimed(session, job_id)
        need = gpus_needed(job.spec.get("resources", {}))
        queue, priority = job.queue.value, job.priority
    try:
        # the GPUs before the claim: a job that waits for one stays queued, not leased
        with worker_pool().lease(need) as gpus:
            if _shutting_down.is_set():  # they came free because this worker is stopping
                publish(job_id, queue, priority)
                return "handed back"
            assignment = _assignment(gpus)
            with _sessions()() as session:
                if not repo.claim_job(session, job_id, me, utcnow(), settings.lease_seconds):
                    return _not_claimed(session, job_id)
                repo.record_events(session, job_id, [("info", assignment)])
            log.info("job %s: claimed by %s, %s", job_id, me, assignment)
            return _supervise(job_id, me, gpus)
    except NotEnoughGpus as e:
        return _fail_unrunnable(job_id, me, str(e))


def _assignment(gpus: tuple[int, ...]) -> str:
    host = socket.gethostname()
    if not gpus:
        return f"running on the CPU of {host}: the job asks for no GPU"
    plural = "s" if len(gpus) > 1 else ""
    return f"running on GPU{plural} {cuda_visible_devices(gpus)} of {host}"


def _fail_unrunnable(job_id: str, me: str, error: str) -> str:
    """Fails a job this worker can never run, once it holds the job, so that exactly one
    delivery decides."""
    settings = get_settings()
    with _sessions()() as session:
        if not repo.claim_job(session, job_id, me, utcnow(), settings.lease_seconds):
            return _not_claimed(session, job_id)
        repo.finish_job(session, job_id, JobStatus.failed, error=error, worker_id=me)
    log.warning("job %s: failed, %s", job_id, error)
    return "failed"


def _not_claimed(session: Session, job_id: str) -> str:
    job = _job(session, job_id)
    if (
        job is not None
        and job.status in (JobStatus.queued, JobStatus.running)
        and job.attempts >= job.max_attempts
    ):
        repo.finish_job(
            session,
            job_id,
            JobStatus.failed,
            error=f"gave up after {job.attempts} attempts (settings.max_attempts)",
        )
        log.warning("job %s: out of attempts, failed", job_id)
        return "failed"
    state = "missing" if job is None else job.status.value
    log.info("job %s: delivery dropped (%s; %d dropped so far)", job_id, state, next(_dropped))
    return "dropped"


def _log_tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
        return f.read().decode(errors="replace").strip()


def _supervise(job_id: str, me: str, gpus: tuple[int, ...]) -> str:
    settings = get_settings()
    folder = job_dir(settings, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = job_log(settings, job_id)
    with log_path.open("ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "workers.runner", job_id, me],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # exactly its GPUs ("" for none): the child's cuda:0 is the first one it was given
            env={**os.environ, CUDA_VISIBLE_DEVICES: cuda_visible_devices(gpus)},
        )
    heartbeat = settings.lease_seconds / 3
    stop_sent_at: float | None = None
    lost = False
    while True:
        try:
            code = child.wait(timeout=heartbeat)
            break
        except subprocess.TimeoutExpired:
            pass
        with _sessions()() as session:
            status = repo.renew_lease(session, job_id, me, utcnow(), settings.lease_seconds)
        if status is None:
            log.warning("job %s: lease lost; stopping its child at once", job_id)
            child.kill()
            child.wait()
            lost = True
            break
        if stop_sent_at is None and (status == JobStatus.cancelling or _shutting_down.is_set()):
            child.send_signal(signal.SIGTERM)
            stop_sent_at = time.monotonic()
            why = "cancelled" if status == JobStatus.cancelling else "the worker is shutting down"
            log.info("job %s: %s; asked its child to checkpoint and stop", job_id, why)
        elif (
            stop_sent_at is not None
            and time.monotonic() - stop_sent_at > settings.stop_grace_seconds
        ):
            log.warning("job %s: its child ignored SIGTERM; killing it", job_id)
            child.kill()
    if lost:
        return "lost"
    with _sessions()() as session:
        job = _job(session, job_id)
        assert job is not None  # a job row is deleted only with its finished job
        if code == EXIT_HANDED_BACK and job.status == JobStatus.queued:
            publish(job_id, job.queue.value, job.priority)
            log.info("job %s: handed back for another worker", job_id)
            return "handed back"
        if job.status in FINISHED:
            log.info("job %s: %s", job_id, job.status.value)
            return job.status.value
        if job.status == JobStatus.cancelling:  # stopped before it could say so itself
            repo.finish_job(session, job_id, JobStatus.cancelled, worker_id=me)
            return JobStatus.cancelled.value
        if _shutting_down.is_set() and repo.release_job(session, job_id, me):
            publish(job_id, job.queue.value, job.priority)
            log.info("job %s: handed back for another worker (its child did not)", job_id)
            return "handed back"
        # the child died without recording an outcome: a signal, a crash in the runner
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        error = f"the training process died ({how}); the end of its log:\n{_log_tail(log_path)}"
        repo.finish_job(session, job_id, JobStatus.failed, error=error, worker_id=me)
        log.warning("job %s: failed, the child died (%s)", job_id, how)
        return "failed"
