"""The store on SQLite and on PostgreSQL: migrations, keys, jobs, leases, metrics, events.

Every test that takes `engine` runs on both databases. PostgreSQL is the machine's own
server (DESCENT_TEST_POSTGRES_URL, default postgres@127.0.0.1:5432/test, used only to
create and drop databases): each run creates a fresh `descent_test_<random>` database
and drops it at the end. An unreachable server fails the run; it never skips.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import Engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from descent.cli import app
from jobs.store import alembic_config, make_engine, make_session_factory, migrate
from jobs.store import repository as repo
from jobs.store.models import ApiKey, Base, Job, JobStatus, Metric, MetricKind

ADMIN_URL = os.environ.get(
    "DESCENT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]
T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = 20.0
T = TypeVar("T")


@contextmanager
def fresh_postgres_database() -> Iterator[URL]:
    """A new empty database on the test server, dropped (with any connections left to
    it) on the way out; no other database is touched."""
    admin = make_url(ADMIN_URL)
    name = f"descent_test_{secrets.token_hex(6)}"
    try:
        conn = psycopg.connect(
            admin.set(drivername="postgresql").render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as e:
        pytest.fail(
            f"PostgreSQL at {admin.render_as_string()} is unreachable, and the store tests "
            f"need it: start it or set DESCENT_TEST_POSTGRES_URL ({e})",
            pytrace=False,
        )
    with conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield admin.set(database=name)
        finally:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[URL]:
    with fresh_postgres_database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'descent.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated database of each kind, shared by the run's tests."""
    engine = make_engine(request.getfixturevalue(f"{request.param}_url"))
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    yield make_session_factory(engine)
    # each test starts from empty tables (cheaper than migrating a database per test)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def owner(session: Session) -> ApiKey:
    return repo.create_key(session, "owner")[0]


@pytest.fixture
def other(session: Session) -> ApiKey:
    return repo.create_key(session, "other")[0]


def spec(name: str = "digits", **extra: Any) -> dict[str, Any]:
    return {"name": name, "training": {"epochs": 1}, "priority": 5, **extra}


def race(n: int, attempt: Callable[[int], T]) -> list[T]:
    """attempt(0..n-1) in n threads released at once; their results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# ---------------------------------------------------------------- migrations


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        heads = ScriptDirectory.from_config(alembic_config(engine.url)).get_heads()
        assert context.get_current_heads() == tuple(heads)


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | URL]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new' / 'descent.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def test_migrations_build_an_empty_database_and_undo_cleanly(empty_url: str | URL) -> None:
    def tables() -> set[str]:
        engine = make_engine(empty_url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    migrate(empty_url)
    migrate(empty_url)  # already at head: nothing to do, no error
    assert tables() == {t.name for t in Base.metadata.sorted_tables} | {"alembic_version"}
    command.downgrade(alembic_config(empty_url), "base")
    assert tables() == {"alembic_version"}


def test_sqlite_connections_use_wal_and_enforce_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'b.db'}")  # directories made
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    engine.dispose()


def test_rows_must_refer_to_existing_jobs(session: Session) -> None:
    with pytest.raises(IntegrityError):
        repo.record_events(session, "no-such-job", [("info", "orphan")])
    session.rollback()


def test_naive_datetimes_are_refused(session: Session, owner: ApiKey) -> None:
    job, _ = repo.create_job(session, owner.id, spec())
    with pytest.raises(StatementError, match="timezone-aware"):
        repo.claim_job(session, job.id, "w", datetime(2030, 1, 1), LEASE)
    session.rollback()


def test_descent_migrate_command(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = runner.invoke(app, ["migrate", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "schema up to date" in result.output
    engine = make_engine(url)
    assert "jobs" in inspect(engine).get_table_names()
    engine.dispose()
    bad = runner.invoke(app, ["migrate", "--database-url", "not a url"])
    assert bad.exit_code == 1
    assert "not a SQLAlchemy URL" in bad.output


# ---------------------------------------------------------------- API keys


def test_a_key_authenticates_with_its_token_until_revoked(session: Session) -> None:
    key, token = repo.create_key(session, "ci", admin=True)
    assert token.startswith(repo.KEY_PREFIX) and len(token) > 40
    assert key.secret_hash != token and token not in key.secret_hash
    found = repo.authenticate(session, token)
    assert found is not None and found.id == key.id and found.admin
    assert repo.authenticate(session, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert repo.authenticate(session, "") is None
    assert [k.name for k in repo.list_keys(session)] == ["ci"]
    assert repo.revoke_key(session, key.id)
    assert repo.authenticate(session, token) is None
    assert not repo.revoke_key(session, key.id)  # already revoked


def test_a_chosen_secret_becomes_the_token(session: Session) -> None:
    chosen = "x" * repo.MIN_SECRET_LENGTH
    key, token = repo.create_key(session, "env", secret=chosen)
    assert token == chosen
    found = repo.authenticate(session, chosen)
    assert found is not None and found.id == key.id
    with pytest.raises(ValueError, match="at least"):
        repo.create_key(session, "short", secret="hunter2")
    with pytest.raises(ValueError, match="already starts with"):
        repo.create_key(session, "same prefix", secret="x" * 40)


# ---------------------------------------------------------------- jobs


def test_an_idempotency_key_returns_the_same_job(
    session: Session, owner: ApiKey, other: ApiKey
) -> None:
    first, created = repo.create_job(session, owner.id, spec(), idempotency_key="k1")
    assert created and first.status == JobStatus.queued and first.attempts == 0
    again, created = repo.create_job(session, owner.id, spec(), idempotency_key="k1")
    assert not created and again.id == first.id
    with pytest.raises(repo.IdempotencyKeyReused, match="another spec"):
        repo.create_job(session, owner.id, spec("changed"), idempotency_key="k1")
    theirs, created = repo.create_job(session, other.id, spec(), idempotency_key="k1")
    assert created and theirs.id != first.id  # keys are per owner
    no_key = [repo.create_job(session, owner.id, spec())[0].id for _ in range(2)]
    assert len(set(no_key)) == 2


def test_concurrent_creates_with_one_key_make_one_job(
    sessions: sessionmaker[Session], owner: ApiKey
) -> None:
    def create(_: int) -> str:
        with sessions() as s:
            return repo.create_job(s, owner.id, spec(), idempotency_key="retry")[0].id

    assert len(set(race(4, create))) == 1


def test_a_key_sees_only_its_own_jobs_and_data_sets(
    session: Session, owner: ApiKey, other: ApiKey
) -> None:
    job, _ = repo.create_job(session, owner.id, spec())
    data = repo.create_dataset(
        session, owner.id, name="d", format="csv", path="/d.csv", summary={"rows": 3}, size_bytes=9
    )
    assert repo.get_job(session, owner.id, job.id) is not None
    assert repo.get_job(session, other.id, job.id) is None
    assert repo.list_jobs(session, other.id) == ([], None)
    assert repo.request_cancel(session, other.id, job.id) is None
    assert repo.get_dataset(session, other.id, data.id) is None
    assert repo.list_datasets(session, other.id) == []
    assert repo.delete_dataset(session, other.id, data.id) is None
    mine = repo.get_job(session, owner.id, job.id)
    assert mine is not None and mine.status == JobStatus.queued  # the other key changed nothing


def test_jobs_list_newest_first_in_cursor_pages(session: Session, owner: ApiKey) -> None:
    jobs = [repo.create_job(session, owner.id, spec(f"j{i}"))[0] for i in range(7)]
    # two pairs share a creation time: the id orders them, and no page repeats or skips one
    for i, job in enumerate(jobs):
        job.created_at = T0 + timedelta(seconds=i // 2)
    session.commit()
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = repo.list_jobs(session, owner.id, limit=3, cursor=cursor)
        seen += [j.id for j in page]
        pages += 1
        if cursor is None:
            break
    assert seen == expected and pages == 3
    repo.request_cancel(session, owner.id, jobs[0].id)
    cancelled, _ = repo.list_jobs(session, owner.id, status=JobStatus.cancelled)
    assert [j.id for j in cancelled] == [jobs[0].id]
    with pytest.raises(ValueError, match="not one this service gave out"):
        repo.list_jobs(session, owner.id, cursor="garbage!")


@pytest.mark.parametrize("claimers", [2, 4])
def test_exactly_one_of_concurrent_claimers_wins(
    sessions: sessionmaker[Session], session: Session, owner: ApiKey, claimers: int
) -> None:
    for _ in range(5):
        job, _ = repo.create_job(session, owner.id, spec())

        def claim(i: int, job_id: str = job.id) -> bool:
            with sessions() as s:
                return repo.claim_job(s, job_id, f"worker-{i}", T0, LEASE)

        assert sum(race(claimers, claim)) == 1
        claimed = session.get(Job, job.id, populate_existing=True)
        assert claimed is not None and claimed.status == JobStatus.running
        assert claimed.attempts == 1 and claimed.lease_owner is not None


def test_an_expired_lease_is_claimable_again_and_attempts_count(
    session: Session, owner: ApiKey
) -> None:
    job, _ = repo.create_job(session, owner.id, spec(), max_attempts=2)
    assert repo.claim_job(session, job.id, "w1", T0, LEASE)
    assert not repo.claim_job(session, job.id, "w2", T0 + timedelta(seconds=10), LEASE)
    # the heartbeat keeps it: renewed at +10, the lease now runs to +30
    assert repo.renew_lease(session, job.id, "w1", T0 + timedelta(seconds=10), LEASE) == "running"
    assert not repo.claim_job(session, job.id, "w2", T0 + timedelta(seconds=25), LEASE)
    assert repo.expired_leases(session, T0 + timedelta(seconds=25)) == []
    later = T0 + timedelta(seconds=31)
    assert [j.id for j in repo.expired_leases(session, later)] == [job.id]
    assert repo.claim_job(session, job.id, "w2", later, LEASE)
    row = session.get(Job, job.id, populate_existing=True)
    assert row is not None and row.attempts == 2 and row.lease_owner == "w2"
    assert row.started_at == T0  # the first start, kept
    # the first worker has lost the job: it can neither renew, report nor finish it
    assert repo.renew_lease(session, job.id, "w1", later, LEASE) is None
    assert not repo.update_progress(
        session, job.id, "w1", step=5, total_steps=10, epoch=0, eta_seconds=1.0, metrics={}
    )
    assert not repo.finish_job(session, job.id, JobStatus.succeeded, worker_id="w1")
    # attempts are capped: with both used, an expired lease is not claimed a third time
    assert not repo.claim_job(session, job.id, "w3", later + timedelta(hours=1), LEASE)
    assert repo.finish_job(session, job.id, JobStatus.failed, error="boom", worker_id="w2")
    row = session.get(Job, job.id, populate_existing=True)
    assert row is not None and row.status == JobStatus.failed and row.error == "boom"
    assert row.lease_owner is None and row.finished_at is not None
    assert not repo.finish_job(session, job.id, JobStatus.succeeded)  # finished stays finished
    with pytest.raises(ValueError, match="not a final status"):
        repo.finish_job(session, job.id, JobStatus.running)


def test_progress_is_written_by_the_lease_holder(session: Session, owner: ApiKey) -> None:
    job, _ = repo.create_job(session, owner.id, spec())
    repo.claim_job(session, job.id, "w1", T0, LEASE)
    assert repo.update_progress(
        session,
        job.id,
        "w1",
        step=40,
        total_steps=100,
        epoch=1,
        eta_seconds=12.5,
        metrics={"loss": 0.5},
    )
    row = repo.get_job(session, owner.id, job.id)
    assert row is not None
    session.refresh(row)
    assert (row.step, row.total_steps, row.epoch, row.eta_seconds) == (40, 100, 1, 12.5)
    assert row.metrics == {"loss": 0.5}


def test_queued_jobs_left_unclaimed_are_found_once_per_timeout(
    session: Session, owner: ApiKey
) -> None:
    job, _ = repo.create_job(session, owner.id, spec())
    created = job.updated_at
    assert repo.stale_queued(session, created + timedelta(seconds=10), 30) == []
    late = created + timedelta(seconds=31)
    assert [j.id for j in repo.stale_queued(session, late, 30)] == [job.id]
    repo.touch_queued(session, [job.id], late)  # the reaper published it again
    assert repo.stale_queued(session, late + timedelta(seconds=10), 30) == []
    assert len(repo.stale_queued(session, late + timedelta(seconds=31), 30)) == 1


def test_cancel_a_queued_job_at_once_and_a_running_one_cooperatively(
    session: Session, owner: ApiKey
) -> None:
    queued, _ = repo.create_job(session, owner.id, spec())
    cancelled = repo.request_cancel(session, owner.id, queued.id)
    assert cancelled is not None and cancelled.status == JobStatus.cancelled
    assert cancelled.finished_at is not None
    assert not repo.claim_job(session, queued.id, "w1", T0, LEASE)  # its message is dropped
    again = repo.request_cancel(session, owner.id, queued.id)
    assert again is not None and again.status == JobStatus.cancelled

    running, _ = repo.create_job(session, owner.id, spec())
    repo.claim_job(session, running.id, "w1", T0, LEASE)
    cancelling = repo.request_cancel(session, owner.id, running.id)
    assert cancelling is not None and cancelling.status == JobStatus.cancelling
    # the worker's next heartbeat says so; it stops and reports
    assert repo.renew_lease(session, running.id, "w1", T0, LEASE) == JobStatus.cancelling
    assert repo.finish_job(session, running.id, JobStatus.cancelled, worker_id="w1")

    done, _ = repo.create_job(session, owner.id, spec())
    repo.claim_job(session, done.id, "w1", T0, LEASE)
    repo.finish_job(session, done.id, JobStatus.succeeded, worker_id="w1")
    with pytest.raises(ValueError, match="already succeeded"):
        repo.request_cancel(session, owner.id, done.id)


def test_metrics_and_events_are_written_in_one_batch(
    engine: Engine, session: Session, owner: ApiKey
) -> None:
    job, _ = repo.create_job(session, owner.id, spec())
    inserts: list[bool] = []

    def count(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(many)

    event.listen(engine, "before_cursor_execute", count)
    try:
        repo.record_metrics(
            session,
            job.id,
            [(s, MetricKind.step, {"loss": 1 / (s + 1)}) for s in range(100)]
            + [(49, "eval", {"val_loss": 0.3})],
        )
        repo.record_events(session, job.id, [("info", f"event {i}") for i in range(20)])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert inserts == [True, True]  # one executemany each, not a statement a row

    rows = repo.metrics_after(session, job.id, after_step=48)
    assert [(m.step, m.kind) for m in rows[:3]] == [
        (49, MetricKind.step),
        (49, MetricKind.eval),
        (50, MetricKind.step),
    ]
    assert len(rows) == 52 and rows[1].values == {"val_loss": 0.3}
    assert session.query(Metric).count() == 101

    # a run resumed from step 60 reports 61.. again: the dead attempt's rows go first
    other, _ = repo.create_job(session, owner.id, spec())
    repo.record_metrics(session, other.id, [(70, MetricKind.step, {"loss": 0.5})])
    repo.forget_metrics_after(session, job.id, 60)
    assert [m.step for m in repo.metrics_after(session, job.id, after_step=58)] == [59, 60]
    assert [m.step for m in repo.metrics_after(session, other.id)] == [70]

    first = repo.events_after(session, job.id, limit=5)
    assert [e.message for e in first] == [f"event {i}" for i in range(5)]
    rest = repo.events_after(session, job.id, after_id=first[-1].id)
    assert [e.message for e in rest] == [f"event {i}" for i in range(5, 20)]
    assert repo.events_after(session, job.id, after_id=rest[-1].id) == []


def test_checkpoints_and_data_sets(session: Session, owner: ApiKey) -> None:
    job, _ = repo.create_job(session, owner.id, spec())
    for step in (20, 10):
        repo.record_checkpoint(session, job.id, step, f"/c/step-{step:08d}.safetensors", 1000)
    assert [c.step for c in repo.list_checkpoints(session, job.id)] == [10, 20]

    data = repo.create_dataset(
        session,
        owner.id,
        name="digits",
        format="csv",
        path="/d/digits.csv",
        summary={"rows": 1797, "classes": 10},
        size_bytes=12_345,
        dataset_id="chosen-id",
    )
    assert data.id == "chosen-id"
    found = repo.get_dataset(session, owner.id, data.id)
    assert found is not None and found.summary == {"rows": 1797, "classes": 10}
    assert [d.id for d in repo.list_datasets(session, owner.id)] == ["chosen-id"]
    deleted = repo.delete_dataset(session, owner.id, data.id)
    assert deleted is not None and deleted.path == "/d/digits.csv"
    assert repo.get_dataset(session, owner.id, data.id) is None


def test_times_come_back_in_utc(session: Session, owner: ApiKey) -> None:
    job, _ = repo.create_job(session, owner.id, spec())
    repo.claim_job(session, job.id, "w1", T0.astimezone(), LEASE)  # local zone in
    session.expunge_all()
    row = repo.get_job(session, owner.id, job.id)
    assert row is not None and row.lease_expires_at == T0 + timedelta(seconds=LEASE)
    assert row.lease_expires_at.tzinfo is UTC and row.created_at.tzinfo is UTC
