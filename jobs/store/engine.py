"""SQLAlchemy engines and sessions for the store, on SQLite or PostgreSQL.

SQLite is the embedded default, shared by the API and worker processes, so every
connection gets WAL (readers never block the one writer), a busy timeout (a writer
waits for the lock instead of failing at once) and enforced foreign keys (SQLite
ignores them unless asked, and job deletion relies on their cascades).

We keep pysqlite's own transaction handling, which begins a transaction only at the
first write: a read followed by a write in one session therefore never has to upgrade
a read snapshot to a write lock, which in WAL mode fails at once with SQLITE_BUSY
instead of waiting. Everything that must be atomic is one conditional statement
(repository.claim_job, request_cancel, ...), never a read-then-write.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalize_url(url: str | URL) -> URL:
    """The URL with a driver we ship: a bare postgresql:// would pick psycopg2, which is
    not installed, so it means psycopg (3) here."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL with synchronous=NORMAL stays consistent after a crash; it may lose only the
    # last transactions on power loss, and saves an fsync per commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str | URL) -> Engine:
    """An engine for `url`; for a SQLite file, its directory is created if missing."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre-ping: a pooled connection that a PostgreSQL restart closed is replaced, not
    # handed to a request that then fails
    return create_engine(parsed, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: repository functions commit and return rows that callers
    # (API responses, workers) read after the commit without another query
    return sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work that only reads (the API's GET requests). On PostgreSQL they run
    in autocommit, so a read is its statements alone: no BEGIN before them and no
    ROLLBACK when the connection goes back to the pool, two of a read's five round trips.
    On SQLite pysqlite already begins a transaction only at the first write."""
    if engine.dialect.name == "sqlite":
        return make_session_factory(engine)
    return make_session_factory(engine.execution_options(isolation_level="AUTOCOMMIT"))
