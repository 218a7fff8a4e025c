"""Alembic migrations against the jobs store; arrive with the store."""
