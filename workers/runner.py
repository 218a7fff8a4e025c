"""The child process that trains one job: `python -m workers.runner JOB_ID WORKER_ID`.

Started by workers.tasks.run_job after it claimed the job as WORKER_ID; every write
here is conditional on that lease, so a runner whose supervisor lost the job cannot
overwrite the outcome of the worker that took over. It:

- applies the job's memory limit (resources.memory_limit_mb) to itself with RLIMIT_AS,
  so a job that outgrows it gets a MemoryError here and fails with a clear error
  instead of the kernel's OOM killer taking the worker;
- resolves the spec's "dataset:<id>" references to the owner's files;
- runs jobs.training.run, resuming from the job's newest checkpoint, with callbacks
  that buffer metrics and events and write them in batches;
- on SIGTERM (the supervisor relays a cancel or the worker's shutdown) stops at the
  next step with a checkpoint, then ends the job cancelled if a cancel was asked for,
  else hands it back queued (exit code EXIT_HANDED_BACK) to resume elsewhere;
- dies with its supervisor: a SIGKILLed worker leaves no orphan training on, and its
  job to the reaper once the lease expires.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs.callbacks import Callbacks
from jobs.paths import dataset_path, job_dir
from jobs.settings import get_settings
from jobs.spec import JobSpec, load_spec
from jobs.store import make_engine, make_session_factory
from jobs.store import repository as repo
from jobs.store.models import Job, JobStatus, MetricKind
from jobs.training import run

EXIT_HANDED_BACK = 75  # workers.tasks reads it; EX_TEMPFAIL: try again later
FLUSH_SECONDS = 1.0
FLUSH_ROWS = 50
PARENT_POLL_SECONDS = 0.5


class StoreCallbacks(Callbacks):
    """Writes the run's reports to the store in batches: a row a step would cost a
    commit a step (SQLite's one writer is shared with the API and other workers)."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, worker_id: str) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.worker_id = worker_id
        self.stop = threading.Event()
        self.metric_rows: list[tuple[int, MetricKind, dict[str, Any]]] = []
        self.event_rows: list[tuple[str, str]] = []
        self.latest: dict[str, Any] = {}
        self.step = 0
        self.total_steps: int | None = None
        self.epoch = 0
        self.flushed_at = time.monotonic()
        self.first_step: tuple[int, float] | None = None  # (step, time) for the ETA

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        self.step = step
        self.total_steps = metrics.get("total_steps", self.total_steps)
        self.epoch = metrics.get("epoch", self.epoch)
        if self.first_step is None:
            self.first_step = (step, time.monotonic())
        self.latest.update(metrics)
        self.metric_rows.append((step, MetricKind.step, metrics))
        self._maybe_flush()

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        self.latest.update(metrics)
        self.metric_rows.append((step, MetricKind.eval, metrics))
        self._maybe_flush()

    def on_event(self, kind: str, message: str) -> None:
        self.event_rows.append((kind, message))
        self._maybe_flush()

    def on_resume(self, step: int, path: Path) -> None:
        # the steps a dead attempt reported after its last checkpoint are trained again
        with self.sessions() as session:
            repo.forget_metrics_after(session, self.job_id, step)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.flush()
        with self.sessions() as session:
            try:
                repo.record_checkpoint(session, self.job_id, step, str(path), path.stat().st_size)
            except IntegrityError:
                # a resumed run can write a step's checkpoint again; the file is replaced
                # in place and its row already names it
                session.rollback()

    def should_cancel(self) -> bool:
        return self.stop.is_set()

    def _eta(self) -> float | None:
        if self.first_step is None or self.total_steps is None or self.step <= self.first_step[0]:
            return None
        start_step, started = self.first_step
        per_step = (time.monotonic() - started) / (self.step - start_step)
        return per_step * (self.total_steps - self.step)

    def _maybe_flush(self) -> None:
        rows = len(self.metric_rows) + len(self.event_rows)
        if rows >= FLUSH_ROWS or time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self.sessions() as session:
            repo.record_metrics(session, self.job_id, self.metric_rows)
            repo.record_events(session, self.job_id, self.event_rows)
            repo.update_progress(
                session,
                self.job_id,
                self.worker_id,
                step=self.step,
                total_steps=self.total_steps,
                epoch=self.epoch,
                eta_seconds=self._eta(),
                metrics=self.latest,
            )
        self.metric_rows, self.event_rows = [], []
        self.flushed_at = time.monotonic()


def _limit_memory(megabytes: int | None) -> None:
    if megabytes is not None:
        limit = megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _die_with_parent() -> None:
    """Exits at once when the supervising worker is gone (it was SIGKILLed): nothing is
    written, the lease simply expires and the reaper re-publishes the job."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _resolved(spec: JobSpec, session: Session, owner_id: int) -> JobSpec:
    """The spec with its "dataset:<id>" references replaced by the owner's files."""

    def resolve(reference: str | None) -> str | None:
        if reference is None or reference.startswith("builtin:"):
            return reference
        path = dataset_path(session, owner_id, reference)
        if path is None:
            raise FileNotFoundError(f"the data set {reference!r} was deleted after the job began")
        return path

    data = spec.data.model_copy(
        update={"train": resolve(spec.data.train), "validation": resolve(spec.data.validation)}
    )
    return spec.model_copy(update={"data": data})


def _finish(
    sessions: sessionmaker[Session],
    job_id: str,
    worker_id: str,
    status: JobStatus,
    error: str | None = None,
) -> None:
    with sessions() as session:
        repo.finish_job(session, job_id, status, error=error, worker_id=worker_id)


def main(job_id: str, worker_id: str) -> int:
    _die_with_parent()
    settings = get_settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            return 0  # deleted while its message waited
        spec = load_spec(job.spec)
        owner_id = job.owner_id
    callbacks = StoreCallbacks(sessions, job_id, worker_id)
    signal.signal(signal.SIGTERM, lambda *_: callbacks.stop.set())
    # Ctrl-C in a terminal reaches the whole process group: the worker relays its own
    # warm shutdown as SIGTERM, so the run stops at a step boundary, not mid-write
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit = spec.resources.memory_limit_mb
    try:
        _limit_memory(limit)
        with sessions() as session:
            spec = _resolved(spec, session, owner_id)
        result = run(spec, job_dir=job_dir(settings, job_id), callbacks=callbacks, resume=True)
    except MemoryError:
        callbacks.flush()
        _finish(
            sessions,
            job_id,
            worker_id,
            JobStatus.failed,
            f"out of memory: the job needed more than its resources.memory_limit_mb "
            f"({limit} MB); raise the limit or lower data.batch_size or the model's size",
        )
        return 1
    except Exception as e:
        traceback.print_exc()  # into the job's log (GET /jobs/{id}/logs), for whoever debugs it
        callbacks.on_event("error", f"{type(e).__name__}: {e}")
        callbacks.flush()
        _finish(sessions, job_id, worker_id, JobStatus.failed, f"{type(e).__name__}: {e}")
        return 1
    callbacks.latest.update(result.metrics)
    callbacks.flush()
    if not result.cancelled:
        _finish(sessions, job_id, worker_id, JobStatus.succeeded)
        return 0
    with sessions() as session:
        if repo.release_job(session, job_id, worker_id):
            # the worker is shutting down, not a cancel: say so after the loop's own
            # "cancelled at step N" (the job is published again only once this exits)
            message = f"handed back at step {callbacks.step}: the worker is shutting down"
            repo.record_events(session, job_id, [("info", message)])
            return EXIT_HANDED_BACK
    _finish(sessions, job_id, worker_id, JobStatus.cancelled)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
