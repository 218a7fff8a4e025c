"""Alembic migrations of the jobs store (jobs.store.models), for SQLite and PostgreSQL.

Applied by `jobs.store.migrate` / `descent migrate`, which configure Alembic in code;
there is no alembic.ini.
"""
