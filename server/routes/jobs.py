"""Jobs: create (validated end to end before anything is queued), list, get, cancel,
delete; their metrics, events (JSON or Server-Sent Events), checkpoints, model and
predictions.

A spec is checked exactly as `descent validate` checks it (fields, components, data,
the model against the data by a dry run, parameter and memory limits), so a job that is
accepted fails later only for reasons the data cannot show (a diverging loss, a crash).

Data sets: data.train and data.validation name `builtin:NAME` or one of the key's own
uploads, as "dataset:<id>" or the bare id. The stored spec keeps the reference in its
"dataset:<id>" form, never the server's file path, so what GET /jobs/{id} shows can be
sent again as is; whoever trains the job resolves it to the file (`dataset_path`
documents how). A file path in a spec is refused: a key reads only its own data.

A job's files live under <data_dir>/jobs/<id> (`job_dir`): checkpoints/ and the
final model.safetensors, which jobs.training.run writes there.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

import engine
from jobs import models
from jobs.datasets import DataBundle, apply_preprocessing, load_data
from jobs.datasets.readers import BUILTIN
from jobs.errors import DataError, SpecError
from jobs.paths import DATASET_REF, dataset_path, is_store_id, job_dir, job_log
from jobs.settings import Settings
from jobs.spec import DataSpec, JobSpec, check_components, load_spec
from jobs.store import repository as repo
from jobs.store.models import FINISHED, Checkpoint, Event, Job, JobStatus, Metric, Queue
from jobs.training import MODEL_FILE, TrainedModel, check_schedule
from server.deps import (
    Credentials,
    CurrentKey,
    JobQueueDep,
    ModelCacheDep,
    SessionDep,
    SettingsDep,
    key_for,
)
from server.job_queue import JobQueue
from server.routes import API_PREFIX
from server.schemas import (
    CheckpointPublic,
    EventPublic,
    JobList,
    JobPublic,
    MetricPublic,
    PredictCreate,
    PredictPublic,
)
from server.telemetry import Telemetry

router = APIRouter(prefix=f"{API_PREFIX}/jobs", tags=["jobs"])
log = logging.getLogger("descent.server")

NAME_MAX_LENGTH = 200  # the store's jobs.name column
MAX_PAGE = 500
MAX_STEP = 2**31 - 1  # steps are 32-bit integers in the store
MAX_ROW_ID = 2**63 - 1
EVENTS_PAGE = 1000
METRICS_PAGE = 10_000
# generating text is sequential, token by token: a few prompts a request
MAX_PROMPTS = 16
# how often an SSE stream looks for new events, and how long it may stay silent before
# a comment line keeps proxies from closing it
SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0

IdPath = Annotated[str, Path(max_length=64, description="the job's id")]


# ---------------------------------------------------------------- validation


def _resolve(session: Session, owner_id: int, value: str, field: str) -> tuple[str, str]:
    """(the reference as stored, what load_data reads) for data.<field>."""
    if value.startswith(BUILTIN):
        return value, value  # load_data names an unknown built-in and lists the known ones
    path = dataset_path(session, owner_id, value)
    if path is None:
        raise SpecError(
            f"data.{field}",
            f"{value!r} is not one of your data sets; upload one (POST /api/v1/datasets) and "
            'name it "dataset:<id>", or use builtin:digits or builtin:pydocs',
        )
    return DATASET_REF + value.removeprefix(DATASET_REF), path


def _load(data: DataSpec, seed: int) -> DataBundle:
    """The data a spec trains on, to check the spec against: a built-in data set's bundle
    is prepared once a process for each data section and seed (validation only reads its
    shapes and sizes), an uploaded one every time (it may be large, and is read quickly)."""
    sources = (data.train, data.validation)
    if all(s is None or s.startswith(BUILTIN) for s in sources):
        return _load_builtin(data.model_dump_json(), seed)
    return load_data(data, seed=seed)


@functools.lru_cache(maxsize=64)
def _load_builtin(data_json: str, seed: int) -> DataBundle:
    return load_data(DataSpec.model_validate_json(data_json), seed=seed)


def validate_spec(
    raw: dict[str, Any], session: Session, owner_id: int, settings: Settings
) -> JobSpec:
    """The spec as it will be stored (data set references in their canonical form), or
    the SpecError/DataError that says what is wrong, where."""
    spec = load_spec(raw)
    if len(spec.name) > NAME_MAX_LENGTH:
        raise SpecError("name", f"at most {NAME_MAX_LENGTH} characters")
    check_components(spec)
    train, train_file = _resolve(session, owner_id, spec.data.train, "train")
    validation = validation_file = None
    if spec.data.validation is not None:
        validation, validation_file = _resolve(
            session, owner_id, spec.data.validation, "validation"
        )
    spec = spec.model_copy(
        update={"data": spec.data.model_copy(update={"train": train, "validation": validation})}
    )
    # load_data reads the owner's files; its errors name the references again, not where
    # the server keeps them
    readable = spec.data.model_copy(update={"train": train_file, "validation": validation_file})
    references = {train_file: train, validation_file: validation}
    try:
        bundle = _load(readable, spec.training.seed)
    except DataError as e:
        raise DataError(references.get(e.source) or e.source, e.reason) from None
    # checked on the meta device only, against the app's own limits (which a deployment
    # sets through the same DESCENT_* variables): a spec asking for a 160 GB layer, or
    # for gigabytes of activations, gets its 422 without this process allocating them
    models.check_model(
        spec.model,
        **bundle.model_sizes(),
        batch_size=spec.data.batch_size,
        precision=spec.training.precision,
        memory_limit_mb=spec.resources.memory_limit_mb,
        limits=models.Limits(settings.max_parameters, settings.max_memory_mb),
    )
    check_schedule(spec, bundle)
    return spec


def _queue_for(spec: JobSpec) -> Queue:
    # "auto" runs wherever a worker takes it, so the cpu queue, which every set-up has
    wants_gpu = spec.resources.device == "cuda" or spec.resources.gpus > 0
    return Queue.gpu if wants_gpu else Queue.cpu


# ---------------------------------------------------------------- jobs


def _own_job(session: Session, owner_id: int, job_id: str) -> Job:
    """The key's job, or 404: another key's job is not found, not forbidden."""
    job = repo.get_job(session, owner_id, job_id) if is_store_id(job_id) else None
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_200_OK: {
            "model": JobPublic,
            "description": "the job an earlier request with this Idempotency-Key created",
        },
        status.HTTP_422_UNPROCESSABLE_CONTENT: {
            "description": "a bad spec, bad data or a model that does not fit: the detail "
            "names the spec path (path) or the data set (source)"
        },
    },
)
async def create_job(
    spec: Annotated[
        dict[str, Any],
        Body(description="a JobSpec (jobs/spec.py; `descent validate` checks one offline)"),
    ],
    request: Request,
    response: Response,
    settings: SettingsDep,
    credentials: Credentials,
    job_queue: JobQueueDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="a retry with the same key and spec returns the same job (200)",
        ),
    ] = None,
) -> JobPublic:
    """Validate the spec against its data and queue it: 201 with the job."""
    # one thread hop for the whole create (the key, the checks, the row, the publish and
    # the session's close), as GET /jobs/{id}: the hand-offs cost more than the work
    job, created = await run_in_threadpool(
        _create_job,
        _Create(request.app.state.sessions, settings, job_queue, request.app.state.telemetry),
        credentials,
        spec,
        idempotency_key,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return job


@dataclass(frozen=True)
class _Create:
    """What a create needs of the app."""

    sessions: sessionmaker[Session]
    settings: Settings
    job_queue: JobQueue
    telemetry: Telemetry


def _create_job(
    app: _Create,
    credentials: HTTPAuthorizationCredentials | None,
    spec: dict[str, Any],
    idempotency_key: str | None,
) -> tuple[JobPublic, bool]:
    with app.sessions() as session:
        key = key_for(session, credentials)
        repeat = idempotency_key is not None and (
            repo.job_for_idempotency_key(session, key.id, idempotency_key) is not None
        )
        limit = app.settings.max_concurrent_jobs_per_key
        if not repeat and repo.active_jobs(session, key.id) >= limit:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"this key already has {limit} queued or running jobs (the limit, "
                "DESCENT_MAX_CONCURRENT_JOBS_PER_KEY); wait for one to finish or cancel one",
            )
        valid = validate_spec(spec, session, key.id, app.settings)
        job, created = repo.create_job(
            session,
            key.id,
            valid.model_dump(mode="json"),
            idempotency_key=idempotency_key,
            queue=_queue_for(valid),
            max_attempts=app.settings.max_attempts,
        )
        if not created:
            return JobPublic.of(job), False
        app.telemetry.jobs_created.inc()
        try:
            app.job_queue.publish(job.id, job.queue, job.priority)
        except Exception:
            # the job is queued in the store whatever the broker did: the reaper publishes
            # it again, so the client gets its job, not an error to retry into a duplicate
            log.exception("publishing job %s failed; the reaper will publish it again", job.id)
        return JobPublic.of(job), True


@router.get("")
def list_jobs(
    session: SessionDep,
    key: CurrentKey,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> JobList:
    """The key's jobs, newest first; pass next_cursor back as ?cursor= for the next page."""
    try:
        jobs, next_cursor = repo.list_jobs(
            session, key.id, status=status_filter, limit=limit, cursor=cursor
        )
    except ValueError as e:  # a cursor this service did not give out
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    return JobList(items=[JobPublic.of(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}")
async def get_job(job_id: IdPath, request: Request, credentials: Credentials) -> JobPublic:
    # the route clients poll, in one thread hop: the key, the job and the session's close
    # together (SessionDep and CurrentKey would take three), the response checked on the
    # event loop
    return await run_in_threadpool(_read_job, request.app.state.read_sessions, credentials, job_id)


def _read_job(
    sessions: sessionmaker[Session], credentials: HTTPAuthorizationCredentials | None, job_id: str
) -> JobPublic:
    with sessions() as session:
        return JobPublic.of(_own_job(session, key_for(session, credentials).id, job_id))


def _transition(
    change: Callable[[Session, int, str], Job | None], session: Session, owner_id: int, job_id: str
) -> Job:
    """The key's job after `change` (cancel, resume): 404 if it has no such job, 409 with
    the reason if the job's state does not allow the change."""
    job = None
    if is_store_id(job_id):
        try:
            job = change(session, owner_id, job_id)
        except ValueError as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job


@router.post(
    "/{job_id}/cancel",
    responses={status.HTTP_409_CONFLICT: {"description": "the job already succeeded or failed"}},
)
def cancel_job(job_id: IdPath, session: SessionDep, key: CurrentKey) -> JobPublic:
    """A queued job is cancelled at once; a running one becomes cancelling until its
    training loop stops at the next step."""
    return JobPublic.of(_transition(repo.request_cancel, session, key.id, job_id))


@router.post(
    "/{job_id}/resume",
    responses={status.HTTP_409_CONFLICT: {"description": "the job is not failed or cancelled"}},
)
def resume_job(
    job_id: IdPath, session: SessionDep, key: CurrentKey, job_queue: JobQueueDep
) -> JobPublic:
    """Queue a failed or cancelled job again; it continues from its newest checkpoint."""
    job = _transition(repo.resume_job, session, key.id, job_id)
    try:
        job_queue.publish(job.id, job.queue, job.priority)
    except Exception:  # queued in the store whatever the broker did: the reaper publishes it
        log.exception("publishing job %s failed; the reaper will publish it again", job.id)
    return JobPublic.of(job)


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
def job_logs(
    job_id: IdPath, session: SessionDep, settings: SettingsDep, key: CurrentKey
) -> PlainTextResponse:
    """The training process's output (empty until a worker has started the job)."""
    job = _own_job(session, key.id, job_id)
    path = job_log(settings, job.id)
    text = path.read_text(errors="replace") if path.exists() else ""
    return PlainTextResponse(text)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={status.HTTP_409_CONFLICT: {"description": "the job has not finished"}},
)
def delete_job(
    job_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    key: CurrentKey,
    model_cache: ModelCacheDep,
) -> None:
    """Delete a finished job, its metrics, events, checkpoints and files."""
    job = _own_job(session, key.id, job_id)
    # conditional, so a job resumed between the read and this delete is not deleted
    deleted = session.execute(
        delete(Job).where(Job.id == job.id, Job.status.in_(FINISHED))
    ).rowcount
    session.commit()
    if deleted != 1:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job_id} is {job.status}; cancel it and delete it once it has stopped",
        )
    model_cache.drop(job.id)
    shutil.rmtree(job_dir(settings, job.id), ignore_errors=True)


# ---------------------------------------------------------------- metrics and events


@router.get("/{job_id}/metrics", response_model=list[MetricPublic])
def job_metrics(
    job_id: IdPath,
    session: SessionDep,
    key: CurrentKey,
    after_step: Annotated[int, Query(ge=-1, le=MAX_STEP)] = -1,
    limit: Annotated[int, Query(ge=1, le=METRICS_PAGE)] = METRICS_PAGE,
) -> Sequence[Metric]:
    """Step and evaluation metrics with step > after_step, in step order."""
    job = _own_job(session, key.id, job_id)
    return repo.metrics_after(session, job.id, after_step, limit)


def _sse(event: Event) -> str:
    data = EventPublic.model_validate(event).model_dump_json()
    return f"id: {event.id}\ndata: {data}\n\n"


def _poll(
    sessions: sessionmaker[Session], job_id: str, after_id: int
) -> tuple[JobStatus | None, Sequence[Event]]:
    # the status first: the events read after it include every one written before the
    # job finished, so a finished status means the stream has seen them all
    with sessions() as session:
        job = session.get(Job, job_id)
        return (None if job is None else job.status), repo.events_after(
            session, job_id, after_id, EVENTS_PAGE
        )


async def _follow(
    sessions: sessionmaker[Session], job_id: str, after_id: int
) -> AsyncIterator[str]:
    """The job's events after `after_id` as SSE messages, then live ones until the job
    ends (or is deleted), then an `end` event with its final status."""
    silent = 0.0
    while True:
        job_status, events = await run_in_threadpool(_poll, sessions, job_id, after_id)
        for event in events:
            after_id = event.id
            yield _sse(event)
        if len(events) == EVENTS_PAGE:
            continue  # a backlog: read on before deciding anything
        if job_status is None or job_status in FINISHED:
            yield f"event: end\ndata: {json.dumps({'status': job_status})}\n\n"
            return
        silent = 0.0 if events else silent + SSE_POLL_SECONDS
        if silent >= SSE_KEEPALIVE_SECONDS:
            silent = 0.0
            yield ": keep-alive\n\n"
        await anyio.sleep(SSE_POLL_SECONDS)


@router.get(
    "/{job_id}/events",
    response_model=list[EventPublic],
    responses={
        status.HTTP_200_OK: {
            "content": {"text/event-stream": {}},
            "description": "a JSON list, or with Accept: text/event-stream a live stream of "
            "`data: <event JSON>` messages ending with `event: end`",
        }
    },
)
def job_events(
    job_id: IdPath,
    request: Request,
    session: SessionDep,
    key: CurrentKey,
    after_id: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> Any:
    """State changes, warnings and errors, oldest first, with id > after_id."""
    job = _own_job(session, key.id, job_id)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return repo.events_after(session, job.id, after_id, EVENTS_PAGE)
    # a reconnecting EventSource sends the last id it saw
    if last_event_id is not None and last_event_id.isdigit():
        after_id = max(after_id, min(int(last_event_id), MAX_ROW_ID))
    return StreamingResponse(
        _follow(request.app.state.read_sessions, job.id, after_id),
        media_type="text/event-stream",
        # no caching, and no buffering by nginx-like proxies: events must arrive as written
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ---------------------------------------------------------------- checkpoints and model


@router.get("/{job_id}/checkpoints", response_model=list[CheckpointPublic])
def list_checkpoints(job_id: IdPath, session: SessionDep, key: CurrentKey) -> Sequence[Checkpoint]:
    job = _own_job(session, key.id, job_id)
    return repo.list_checkpoints(session, job.id)


@router.get(
    "/{job_id}/checkpoints/{step}",
    response_class=FileResponse,
    responses={status.HTTP_200_OK: {"content": {"application/octet-stream": {}}}},
)
def download_checkpoint(
    job_id: IdPath,
    step: Annotated[int, Path(ge=0, le=MAX_STEP)],
    session: SessionDep,
    key: CurrentKey,
) -> FileResponse:
    """The checkpoint written at `step`, as safetensors (PyTorch reads its weights)."""
    job = _own_job(session, key.id, job_id)
    found = next((c for c in repo.list_checkpoints(session, job.id) if c.step == step), None)
    # the loop prunes old checkpoints: a row may outlive its file
    if found is None or not FilePath(found.path).is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no checkpoint {step}")
    path = FilePath(found.path)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


def _model_file(settings: Settings, job: Job) -> FilePath:
    path = job_dir(settings, job.id) / MODEL_FILE
    if not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"job {job.id} has no model yet ({job.status}); it is written when training ends",
        )
    return path


@router.get(
    "/{job_id}/model",
    response_class=FileResponse,
    responses={status.HTTP_200_OK: {"content": {"application/octet-stream": {}}}},
)
def download_model(
    job_id: IdPath, session: SessionDep, settings: SettingsDep, key: CurrentKey
) -> FileResponse:
    """The trained model as safetensors; its metadata holds the spec and preprocessing."""
    job = _own_job(session, key.id, job_id)
    return FileResponse(
        _model_file(settings, job), media_type="application/octet-stream", filename=MODEL_FILE
    )


def _classify(trained: TrainedModel, inputs: list[Any]) -> PredictPublic:
    x = apply_preprocessing(trained.preprocessing, inputs)
    if x.ndim != len(trained.preprocessing["input_shape"]) + 1:
        raise DataError("inputs", "a list of samples, even for one sample: [[...]]")
    with engine.no_grad():
        probabilities = trained.model(x).softmax(-1).numpy().astype(np.float64)
    classes = trained.preprocessing["classes"]
    return PredictPublic(
        task="classification",
        labels=[classes[i] for i in probabilities.argmax(-1).tolist()],
        probabilities=probabilities.tolist(),
        classes=classes,
    )


@router.post("/{job_id}/predict")
def predict(
    job_id: IdPath,
    body: PredictCreate,
    session: SessionDep,
    settings: SettingsDep,
    key: CurrentKey,
    model_cache: ModelCacheDep,
) -> PredictPublic:
    """Run the trained model on a batch of inputs, preprocessed as in training:
    classifiers give probabilities and labels, regressions their outputs, language models
    a completion of each prompt."""
    job = _own_job(session, key.id, job_id)
    trained = model_cache.get(job.id, _model_file(settings, job))
    if trained.task == "classification":
        return _classify(trained, body.inputs)
    if trained.task == "regression":
        outputs = trained.predict(body.inputs)
        if outputs.ndim < 2:
            raise DataError("inputs", "a list of samples, even for one sample: [[...]]")
        return PredictPublic(task="regression", outputs=outputs.astype(np.float64).tolist())
    if len(body.inputs) > MAX_PROMPTS or not all(isinstance(p, str) and p for p in body.inputs):
        raise DataError("inputs", f"a language model takes 1 to {MAX_PROMPTS} non-empty prompts")
    return PredictPublic(
        task="language_model",
        completions=[trained.generate(p, body.max_tokens, seed=body.seed) for p in body.inputs],
    )
