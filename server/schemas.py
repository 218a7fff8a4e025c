"""Request and response bodies: a Create/Public family per resource.

`*Create` is what a client sends, `*Public` what the API returns; store rows never leave
the service as they are (`from_attributes` reads only the fields named here, so a key's
hash or a data set's server path stays inside). A job's spec is the one body that is not
a model here: POST /jobs takes the JobSpec JSON of jobs.spec, validated by `load_spec` so
that its errors carry the spec's own field paths.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.store.models import Job, JobStatus, MetricKind, Queue

# Predict takes a batch: large enough for real use, small enough that one request cannot
# pin a worker thread for long.
MAX_PREDICT_INPUTS = 10_000
MAX_GENERATED_TOKENS = 1_000


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---------------------------------------------------------------- API keys


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    admin: bool = False


class KeyPublic(_Public):
    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell keys apart")
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    secret: str = Field(description="the bearer token; shown this once and never stored")


# ---------------------------------------------------------------- data sets


class DatasetSummary(BaseModel):
    """What validation found in a data set. For text, `rows` counts the language model's
    windows at the default context (`input_shape`)."""

    task: Literal["classification", "regression", "language_model"]
    rows: int
    input_shape: list[int]
    classes: list[Any] | None = None
    vocab_size: int | None = None


class DatasetPublic(_Public):
    id: str = Field(description='use it in a spec as data.train = "dataset:<id>"')
    name: str
    format: str
    builtin: bool = False
    size_bytes: int | None = None
    summary: DatasetSummary
    created_at: datetime | None = None


# ---------------------------------------------------------------- jobs


class JobProgress(BaseModel):
    step: int
    total_steps: int | None
    epoch: int
    eta_seconds: float | None


class JobPublic(BaseModel):
    id: str
    name: str
    status: JobStatus
    priority: int
    queue: Queue
    progress: JobProgress
    metrics: dict[str, Any] = Field(description="the latest step and evaluation metrics")
    attempts: int
    max_attempts: int
    error: str | None
    spec: dict[str, Any] = Field(description="the validated spec, data sets resolved")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        """From a store row, whose progress columns are flat."""
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            priority=job.priority,
            queue=job.queue,
            progress=JobProgress(
                step=job.step,
                total_steps=job.total_steps,
                epoch=job.epoch,
                eta_seconds=job.eta_seconds,
            ),
            metrics=job.metrics,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            error=job.error,
            spec=job.spec,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
        )


class JobList(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class MetricPublic(_Public):
    step: int
    kind: MetricKind
    values: dict[str, Any]
    created_at: datetime


class EventPublic(_Public):
    id: int = Field(description="increasing; an SSE client resumes after it (Last-Event-ID)")
    kind: str
    message: str
    created_at: datetime


class CheckpointPublic(_Public):
    step: int
    size_bytes: int
    created_at: datetime


# ---------------------------------------------------------------- predict


class PredictCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        min_length=1,
        max_length=MAX_PREDICT_INPUTS,
        description="a batch: samples of the training data's input shape, or prompts (text) "
        "for a language model",
    )
    max_tokens: int = Field(
        100, ge=1, le=MAX_GENERATED_TOKENS, description="language models: tokens to generate"
    )
    seed: int = Field(0, description="language models: the sampling seed")


class PredictPublic(BaseModel):
    task: Literal["classification", "regression", "language_model"]
    labels: list[Any] | None = Field(None, description="classification: the predicted labels")
    probabilities: list[list[float]] | None = Field(
        None, description="classification: per input, one probability per class"
    )
    classes: list[Any] | None = Field(None, description="classification: labels in id order")
    outputs: list[Any] | None = Field(None, description="regression: the model's outputs")
    completions: list[str] | None = Field(None, description="language models: generated text")
