"""An index on jobs (owner_id, status): POST /jobs counts the key's unfinished jobs for
its concurrent-job limit, which scanned every job the key ever made.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_jobs_owner_status"), "jobs", ["owner_id", "status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_owner_status"), table_name="jobs")
