"""Where a job's files live and which file a data set reference names.

Shared by the API (which validates specs and serves models) and the workers (which
train): both must agree, and workers never import server (DESIGN.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.orm import Session

from jobs.settings import Settings
from jobs.store import repository as repo

DATASET_REF = "dataset:"
JOBS_DIR = "jobs"
LOG_FILE = "worker.log"  # the training process's stdout and stderr, served at /jobs/{id}/logs

# job and data set ids are the store's UUID strings (models.new_id); anything else names
# nothing, and needs no database round trip to say so
_STORE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_store_id(value: str) -> bool:
    return _STORE_ID.fullmatch(value) is not None


def job_dir(settings: Settings, job_id: str) -> Path:
    """<data_dir>/jobs/<id>: the job's checkpoints/ and its final model.safetensors."""
    return settings.data_dir / JOBS_DIR / job_id


def job_log(settings: Settings, job_id: str) -> Path:
    return job_dir(settings, job_id) / LOG_FILE


def dataset_path(session: Session, owner_id: int, reference: str) -> str | None:
    """The stored file of the owner's data set that `reference` ("dataset:<id>" or the
    bare id) names, or None if the owner has no such data set."""
    dataset_id = reference.removeprefix(DATASET_REF)
    if not is_store_id(dataset_id):
        return None
    row = repo.get_dataset(session, owner_id, dataset_id)
    return None if row is None else row.path
