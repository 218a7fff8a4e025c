"""The store's operations: plain functions over a Session, shared by the API and workers.

Each function that writes is one unit of work and commits before it returns, so a
caller never holds a write lock (SQLite has one for the whole file) across its own slow
code. Reads take an owner where a key asks: another key's job or data set is simply
not found, which the API turns into 404.

The job row is the truth about who runs a job. A worker takes it with `claim_job`, a
single conditional UPDATE, so of any number of concurrent claimers exactly one sees
its row count as 1; it keeps it with `renew_lease` and lets go with `finish_job`. The
reaper finds the jobs whose worker died (`expired_leases`) or whose broker message was
lost (`stale_queued`) and publishes them again; duplicates are harmless because the
claim decides.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs.store.models import (
    FINISHED,
    LEASED,
    ApiKey,
    Checkpoint,
    Dataset,
    Event,
    Job,
    JobStatus,
    Metric,
    MetricKind,
    Queue,
    UTCDateTime,
    new_id,
    utcnow,
)

# ---------------------------------------------------------------- API keys

KEY_PREFIX = "dsk_"
# The token's first characters, stored in clear to find its row and shown in listings
# ("dsk_" plus 8 random characters: 48 bits, so two keys never share one in practice).
PREFIX_LENGTH = 12
# A caller-chosen secret (DESCENT_API_KEY) must be long enough to be unguessable: the
# hash below is fast, which is safe only for high-entropy secrets.
MIN_SECRET_LENGTH = 32


def _hash_secret(token: str) -> str:
    # SHA-256, not a slow password hash: a generated token carries 256 random bits, so
    # there is no dictionary to try and no brute force to slow down, while scrypt or
    # bcrypt would add tens of milliseconds to every authenticated request.
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(
    session: Session, name: str, *, admin: bool = False, secret: str | None = None
) -> tuple[ApiKey, str]:
    """A new key and its token, which is shown once and never stored.

    `secret` makes that string the token (for DESCENT_API_KEY); it must be at least
    MIN_SECRET_LENGTH characters and not share its first PREFIX_LENGTH with another key.
    """
    if secret is None:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
    elif len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"an API key needs at least {MIN_SECRET_LENGTH} characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    key = ApiKey(
        name=name, prefix=secret[:PREFIX_LENGTH], secret_hash=_hash_secret(secret), admin=admin
    )
    session.add(key)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ValueError(
            f"another key already starts with {secret[:PREFIX_LENGTH]!r}; choose another"
        ) from None
    return key, secret


def authenticate(session: Session, token: str) -> ApiKey | None:
    """The live key whose token this is, or None."""
    key = session.scalar(
        select(ApiKey).where(ApiKey.prefix == token[:PREFIX_LENGTH], ApiKey.revoked_at.is_(None))
    )
    # constant-time compare: response times say nothing about how much of a guessed
    # token's hash matched (only whether its public prefix exists)
    if key is None or not hmac.compare_digest(key.secret_hash, _hash_secret(token)):
        return None
    return key


def list_keys(session: Session) -> Sequence[ApiKey]:
    return session.scalars(select(ApiKey).order_by(ApiKey.id)).all()


def revoke_key(session: Session, key_id: int) -> bool:
    """Revokes a live key; False if there is none with this id (or it is already revoked)."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1


# ---------------------------------------------------------------- jobs


class IdempotencyKeyReused(ValueError):
    """An Idempotency-Key repeated with a different spec: the request is not a retry."""


def _insert(session: Session) -> Any:
    # INSERT ... ON CONFLICT DO NOTHING exists on both databases, under dialect modules
    dialect = session.get_bind().dialect.name
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]


def create_job(
    session: Session,
    owner_id: int,
    spec: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    queue: Queue = Queue.cpu,
    max_attempts: int = 3,
) -> tuple[Job, bool]:
    """(job, created): a new queued job for a validated spec (its JSON form), or the job
    this owner already created with the same idempotency key (created False).

    Two concurrent requests with one key make one job: the insert does nothing on a
    conflict, and both then read the row that won. A repeated key with another spec
    raises IdempotencyKeyReused.
    """
    now = utcnow()
    values = {
        "id": new_id(),
        "owner_id": owner_id,
        "name": spec["name"],
        "spec": spec,
        "priority": spec.get("priority", 5),
        "queue": queue,
        "idempotency_key": idempotency_key,
        "max_attempts": max_attempts,
        "created_at": now,
        "updated_at": now,
    }
    if idempotency_key is None:
        job = Job(**values)
        session.add(job)
        session.commit()
        return job, True
    # a Core insert on the table, with the driver's row count (0 on a conflict) kept:
    # SQLAlchemy promises a row count only for UPDATE and DELETE unless asked
    insert = (
        _insert(session)(Job.__table__)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["owner_id", "idempotency_key"])
        .execution_options(preserve_rowcount=True)
    )
    created = session.execute(insert).rowcount == 1
    session.commit()
    job = session.scalars(
        select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == idempotency_key)
    ).one()
    if not created and job.spec != spec:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {idempotency_key!r} was used for job {job.id} with another "
            "spec; use a new key for a new job"
        )
    return job, created


def get_job(session: Session, owner_id: int, job_id: str) -> Job | None:
    """The job if this owner's, else None (another key's job is not found, not forbidden)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner_id))


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        created_at = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError) as e:
        raise ValueError(f"cursor {cursor!r} is not one this service gave out") from e
    if created_at.tzinfo is None or not isinstance(job_id, str):
        raise ValueError(f"cursor {cursor!r} is not one this service gave out")
    return created_at, job_id


def list_jobs(
    session: Session,
    owner_id: int,
    *,
    status: JobStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[Sequence[Job], str | None]:
    """(jobs, next cursor): this owner's jobs, newest first; the cursor (None on the last
    page) continues after the page's last job. Keyset pagination on (created_at, id), so
    jobs created while a client pages never shift or repeat a page. A cursor that is not
    ours raises ValueError."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    query: Select[tuple[Job]] = select(Job).where(Job.owner_id == owner_id)
    if status is not None:
        query = query.where(Job.status == status)
    if cursor is not None:
        created_at, job_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                Job.created_at < created_at,
                and_(Job.created_at == created_at, Job.id < job_id),
            )
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    jobs = session.scalars(query).all()
    if len(jobs) <= limit:
        return jobs, None
    return jobs[:limit], _encode_cursor(jobs[limit - 1])


def claim_job(
    session: Session, job_id: str, worker_id: str, now: datetime, lease_seconds: float
) -> bool:
    """Takes the job for `worker_id` if it is queued, or running on an expired lease, and
    has attempts left: one conditional UPDATE, so exactly one of concurrent claimers
    wins. The winner's job is running, leased until now + lease_seconds, attempts + 1."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempts < Job.max_attempts,
            or_(
                Job.status == JobStatus.queued,
                and_(Job.status == JobStatus.running, Job.lease_expires_at < now),
            ),
        )
        .values(
            status=JobStatus.running,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, literal(now, UTCDateTime())),
            updated_at=now,
        )
    )
    session.commit()
    return result.rowcount == 1


def renew_lease(
    session: Session, job_id: str, worker_id: str, now: datetime, lease_seconds: float
) -> JobStatus | None:
    """The heartbeat: extends the worker's lease and returns the job's status (cancelling
    means stop at the next step), or None if the worker no longer holds the job (another
    claimed it after the lease expired, or it finished): the worker must stop."""
    status = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status.in_(LEASED))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
        .returning(Job.status)
    ).scalar_one_or_none()
    session.commit()
    return status


def update_progress(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    step: int,
    total_steps: int | None,
    epoch: int,
    eta_seconds: float | None,
    metrics: dict[str, Any],
) -> bool:
    """The job's progress and latest metrics, from the worker that holds it (False if it
    no longer does)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status.in_(LEASED))
        .values(
            step=step,
            total_steps=total_steps,
            epoch=epoch,
            eta_seconds=eta_seconds,
            metrics=metrics,
            updated_at=utcnow(),
        )
    )
    session.commit()
    return result.rowcount == 1


def finish_job(
    session: Session,
    job_id: str,
    status: JobStatus,
    *,
    error: str | None = None,
    worker_id: str | None = None,
) -> bool:
    """Ends an unfinished job as succeeded, failed or cancelled and drops its lease. With
    `worker_id`, only while that worker holds it, so a worker that lost its lease cannot
    overwrite the outcome of the one that took over. False if nothing changed."""
    if status not in FINISHED:
        raise ValueError(f"{status} is not a final status; one of {sorted(FINISHED)}")
    conditions = [Job.id == job_id, Job.status.not_in(FINISHED)]
    if worker_id is not None:
        conditions.append(Job.lease_owner == worker_id)
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(*conditions)
        .values(
            status=status,
            error=error,
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    session.commit()
    return result.rowcount == 1


def release_job(session: Session, job_id: str, worker_id: str) -> bool:
    """Hands a running job back (queued, no lease) from the worker that holds it, when
    that worker shuts down: the job resumes elsewhere from its checkpoint. A hand-back is
    not a failed attempt, so the claim's attempt is returned. False if the worker no
    longer holds it or it is being cancelled (then it must end as cancelled instead)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.running)
        .values(
            status=JobStatus.queued,
            lease_owner=None,
            lease_expires_at=None,
            attempts=Job.attempts - 1,
            updated_at=now,
        )
    )
    session.commit()
    return result.rowcount == 1


def requeue_expired(session: Session, job_id: str, now: datetime) -> bool:
    """Turns a running job whose lease expired back to queued (its worker died), for the
    reaper to publish again; its attempts stay counted. False if a worker renewed or
    claimed it meanwhile."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, Job.lease_expires_at < now)
        .values(status=JobStatus.queued, lease_owner=None, lease_expires_at=None, updated_at=now)
    )
    session.commit()
    return result.rowcount == 1


def request_cancel(session: Session, owner_id: int, job_id: str) -> Job | None:
    """Cancels the owner's job: a queued one at once (no worker holds it, and a later
    claim finds it cancelled), a running one cooperatively (cancelling, until its loop
    stops). None if the job is not this owner's; ValueError if it already succeeded or
    failed. Cancelling a cancelling or cancelled job again returns it unchanged."""
    now = utcnow()
    mine = and_(Job.id == job_id, Job.owner_id == owner_id)
    # two conditional statements, not read-then-write: a claim that turns the job from
    # queued to running between them is caught by the second
    session.execute(
        update(Job)
        .where(mine, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, finished_at=now, updated_at=now)
    )
    session.execute(
        update(Job)
        .where(mine, Job.status == JobStatus.running)
        .values(status=JobStatus.cancelling, updated_at=now)
    )
    session.commit()
    job = session.scalar(select(Job).where(mine).execution_options(populate_existing=True))
    if job is not None and job.status in (JobStatus.succeeded, JobStatus.failed):
        raise ValueError(f"job {job_id} already {job.status}; there is nothing to cancel")
    return job


def active_jobs(session: Session, owner_id: int) -> int:
    """How many of the owner's jobs are queued, running or stopping."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == owner_id, Job.status.not_in(FINISHED))
        )
        or 0
    )


def job_for_idempotency_key(session: Session, owner_id: int, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def resume_job(session: Session, owner_id: int, job_id: str) -> Job | None:
    """Queue the owner's failed or cancelled job again, with its attempts reset: its next
    run resumes from the newest checkpoint. None if the job is not this owner's;
    ValueError if it is queued, running or succeeded."""
    now = utcnow()
    mine = and_(Job.id == job_id, Job.owner_id == owner_id)
    resumed = session.execute(
        update(Job)
        .where(mine, Job.status.in_((JobStatus.failed, JobStatus.cancelled)))
        .values(
            status=JobStatus.queued,
            error=None,
            finished_at=None,
            attempts=0,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
    ).rowcount
    session.commit()
    job = session.scalar(select(Job).where(mine).execution_options(populate_existing=True))
    if job is not None and resumed != 1:
        raise ValueError(
            f"job {job_id} is {job.status}; only a failed or cancelled job can be resumed"
        )
    return job


def expired_leases(session: Session, now: datetime) -> Sequence[Job]:
    """Jobs whose worker stopped renewing its lease: running ones to publish again,
    cancelling ones to end as cancelled."""
    return session.scalars(
        select(Job).where(Job.status.in_(LEASED), Job.lease_expires_at < now)
    ).all()


def stale_queued(session: Session, now: datetime, timeout_seconds: float) -> Sequence[Job]:
    """Queued jobs untouched for `timeout_seconds`: their broker message may be lost.
    Measured from updated_at, so a job the reaper re-published (`touch_queued`) waits
    another timeout instead of being published again at every sweep."""
    cutoff = now - timedelta(seconds=timeout_seconds)
    return session.scalars(
        select(Job).where(Job.status == JobStatus.queued, Job.updated_at < cutoff)
    ).all()


def touch_queued(session: Session, job_ids: Iterable[str], now: datetime) -> None:
    """Marks queued jobs as just published (see stale_queued)."""
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.queued)
        .values(updated_at=now)
    )
    session.commit()


# ---------------------------------------------------------------- metrics, events, checkpoints


def record_metrics(
    session: Session, job_id: str, rows: Iterable[tuple[int, MetricKind | str, dict[str, Any]]]
) -> None:
    """(step, kind, values) rows, inserted in one batch and one transaction: a worker
    buffers a job's metrics and writes them every few seconds, not one commit a step."""
    now = utcnow()
    batch = [
        {
            "job_id": job_id,
            "step": step,
            "kind": MetricKind(kind),
            "values": values,
            "created_at": now,
        }
        for step, kind, values in rows
    ]
    if batch:
        session.execute(Metric.__table__.insert(), batch)
        session.commit()


def forget_metrics_after(session: Session, job_id: str, step: int) -> None:
    """Deletes the job's metric rows past `step`: a run resumed from the checkpoint at
    `step` reports those steps again, and a step is reported once."""
    session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.step > step))
    session.commit()


def metrics_after(
    session: Session, job_id: str, after_step: int = -1, limit: int = 10_000
) -> Sequence[Metric]:
    """The job's metric rows with step > after_step, in step order."""
    return session.scalars(
        select(Metric)
        .where(Metric.job_id == job_id, Metric.step > after_step)
        .order_by(Metric.step, Metric.id)
        .limit(limit)
    ).all()


def record_events(session: Session, job_id: str, events: Iterable[tuple[str, str]]) -> None:
    """(kind, message) events in one batch; their ids keep the order given."""
    now = utcnow()
    batch = [
        {"job_id": job_id, "kind": kind, "message": message, "created_at": now}
        for kind, message in events
    ]
    if batch:
        session.execute(Event.__table__.insert(), batch)
        session.commit()


def events_after(
    session: Session, job_id: str, after_id: int = 0, limit: int = 1000
) -> Sequence[Event]:
    """The job's events with id > after_id, oldest first: the SSE stream's resume point."""
    return session.scalars(
        select(Event)
        .where(Event.job_id == job_id, Event.id > after_id)
        .order_by(Event.id)
        .limit(limit)
    ).all()


def record_checkpoint(
    session: Session, job_id: str, step: int, path: str, size_bytes: int
) -> Checkpoint:
    checkpoint = Checkpoint(job_id=job_id, step=step, path=path, size_bytes=size_bytes)
    session.add(checkpoint)
    session.commit()
    return checkpoint


def list_checkpoints(session: Session, job_id: str) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
    ).all()


# ---------------------------------------------------------------- data sets


def create_dataset(
    session: Session,
    owner_id: int,
    *,
    name: str,
    format: str,
    path: str,
    summary: dict[str, Any],
    size_bytes: int,
    dataset_id: str | None = None,
) -> Dataset:
    """A data set row; `dataset_id` lets the caller choose the id first, to name the
    file it stores under it."""
    dataset = Dataset(
        id=dataset_id or new_id(),
        owner_id=owner_id,
        name=name,
        format=format,
        path=path,
        summary=summary,
        size_bytes=size_bytes,
    )
    session.add(dataset)
    session.commit()
    return dataset


def list_datasets(session: Session, owner_id: int) -> Sequence[Dataset]:
    return session.scalars(
        select(Dataset)
        .where(Dataset.owner_id == owner_id)
        .order_by(Dataset.created_at.desc(), Dataset.id.desc())
    ).all()


def get_dataset(session: Session, owner_id: int, dataset_id: str) -> Dataset | None:
    return session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_id == owner_id)
    )


def delete_dataset(session: Session, owner_id: int, dataset_id: str) -> Dataset | None:
    """Deletes the owner's data set row and returns it (its file is the caller's to
    remove), or None if there is no such data set of this owner."""
    dataset = get_dataset(session, owner_id, dataset_id)
    if dataset is not None:
        session.delete(dataset)
        session.commit()
    return dataset
