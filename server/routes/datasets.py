"""Data sets: upload (validated and summarised by jobs.datasets), list with the built-ins,
get, delete. A key sees only its own uploads; the built-ins are everyone's.

An upload is stored as <data_dir>/datasets/<id>/<filename>, and a job names it in its
spec as data.train = "dataset:<id>" (routes/jobs.py resolves that to the file).
"""

from __future__ import annotations

import re
import shutil
from functools import cache
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Path, UploadFile, status

from jobs.datasets import DataBundle, load_data
from jobs.datasets.readers import BUILTIN
from jobs.errors import DataError
from jobs.paths import is_store_id
from jobs.settings import Settings
from jobs.spec import DataSpec
from jobs.store import repository as repo
from jobs.store.models import new_id
from server.deps import CurrentKey, SessionDep, SettingsDep
from server.routes import API_PREFIX
from server.schemas import DatasetPublic, DatasetSummary

router = APIRouter(prefix=f"{API_PREFIX}/datasets", tags=["datasets"])

BUILTINS = ("digits", "pydocs")
DATASETS_DIR = "datasets"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
COPY_CHUNK_BYTES = 1 << 20

IdPath = Annotated[str, Path(max_length=64, description='an upload\'s id, or "builtin:NAME"')]


def dataset_dir(settings: Settings, dataset_id: str) -> FilePath:
    return settings.data_dir / DATASETS_DIR / dataset_id


def summarize(bundle: DataBundle) -> DatasetSummary:
    return DatasetSummary(
        task=bundle.task,
        rows=len(bundle.train),
        input_shape=list(bundle.input_shape),
        classes=bundle.preprocessing.get("classes"),
        vocab_size=bundle.vocab_size,
    )


def _validate(source: str, label_column: str | None) -> DatasetSummary:
    # the whole file as training data: the summary counts every row
    data = DataSpec(train=source, validation_split=0.0, label_column=label_column)
    return summarize(load_data(data, seed=0))


@cache
def builtin(name: str) -> DatasetPublic:
    """A built-in data set's listing entry; read once a process (tens of milliseconds)."""
    source = BUILTIN + name
    return DatasetPublic(
        id=source, name=name, format="builtin", builtin=True, summary=_validate(source, None)
    )


def _safe_filename(filename: str | None) -> str:
    """The client's file name reduced to a safe base name: it only ever names a file
    inside the data set's own folder, and its suffix picks the reader."""
    name = _UNSAFE.sub("_", FilePath(filename or "").name).lstrip(".")
    return name or "upload"


@router.post("", status_code=status.HTTP_201_CREATED)
def upload_dataset(
    file: Annotated[UploadFile, File(description=".npz, .safetensors, .csv, .txt or .jsonl")],
    name: Annotated[str, Form(min_length=1, max_length=200)],
    session: SessionDep,
    settings: SettingsDep,
    key: CurrentKey,
    label_column: Annotated[
        str | None, Form(max_length=200, description="CSV: the label column (default label)")
    ] = None,
) -> DatasetPublic:
    """Store, validate and summarise an uploaded data set; 422 names what is wrong with
    it, 413 if it is over the service's upload limit (DESCENT_MAX_UPLOAD_MB)."""
    limit = settings.max_upload_mb * 2**20
    file.file.seek(0, 2)  # the parser spooled the whole part already: its size is known
    size = file.file.tell()
    file.file.seek(0)
    if size > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the file has {size:,} bytes; the limit is {settings.max_upload_mb} MB",
        )
    filename = _safe_filename(file.filename)
    dataset_id = new_id()
    folder = dataset_dir(settings, dataset_id)
    folder.mkdir(parents=True)
    path = folder / filename
    try:
        with path.open("wb") as out:
            shutil.copyfileobj(file.file, out, COPY_CHUNK_BYTES)
        try:
            summary = _validate(str(path), label_column)
        except DataError as e:
            # named by the client's file, not by where the server keeps it
            raise DataError(filename, e.reason) from None
        row = repo.create_dataset(
            session,
            key.id,
            name=name,
            format=path.suffix.lstrip(".").lower(),
            path=str(path),
            summary=summary.model_dump(),
            size_bytes=size,
            dataset_id=dataset_id,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return DatasetPublic.model_validate(row)


@router.get("")
def list_datasets(session: SessionDep, key: CurrentKey) -> list[DatasetPublic]:
    """The built-ins, then this key's uploads, newest first."""
    own = [DatasetPublic.model_validate(row) for row in repo.list_datasets(session, key.id)]
    return [builtin(name) for name in BUILTINS] + own


def _not_found(dataset_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no data set {dataset_id!r}")


@router.get("/{dataset_id}")
def get_dataset(dataset_id: IdPath, session: SessionDep, key: CurrentKey) -> DatasetPublic:
    if dataset_id.startswith(BUILTIN):
        if dataset_id.removeprefix(BUILTIN) not in BUILTINS:
            raise _not_found(dataset_id)
        return builtin(dataset_id.removeprefix(BUILTIN))
    row = repo.get_dataset(session, key.id, dataset_id) if is_store_id(dataset_id) else None
    if row is None:
        raise _not_found(dataset_id)
    return DatasetPublic.model_validate(row)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: IdPath, session: SessionDep, key: CurrentKey) -> None:
    """Delete an upload and its file. Jobs already created from it keep their spec, but
    one that has not read it yet fails with a DataError naming the missing file."""
    if dataset_id.startswith(BUILTIN):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "built-in data sets cannot be deleted")
    row = repo.delete_dataset(session, key.id, dataset_id) if is_store_id(dataset_id) else None
    if row is None:
        raise _not_found(dataset_id)
    shutil.rmtree(FilePath(row.path).parent, ignore_errors=True)
