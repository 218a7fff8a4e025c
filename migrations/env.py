"""Alembic's environment: runs the migrations on the URL that jobs.store.migrate passes.

Online only: the store is always migrated on a live connection, never by emitting SQL.
"""

from __future__ import annotations

from alembic import context

from jobs.store.engine import make_engine
from jobs.store.models import Base

config = context.config
if context.is_offline_mode():
    raise SystemExit("the store's migrations run online only: use `descent migrate`")

engine = make_engine(config.attributes["url"])
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite alters a table by rebuilding it: autogenerate writes batch operations
            # so that one migration runs on both databases
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
