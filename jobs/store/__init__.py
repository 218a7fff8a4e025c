"""The store: SQLAlchemy models, engines, repository functions and migrations.

SQLite (WAL) in the data dir by default, PostgreSQL for a deployment; the same Alembic
migrations (the top-level `migrations` package) build both.
"""

from jobs.store.engine import make_engine, make_read_session_factory, make_session_factory
from jobs.store.migrate import alembic_config, migrate

__all__ = [
    "alembic_config",
    "make_engine",
    "make_read_session_factory",
    "make_session_factory",
    "migrate",
]
