"""The service's configuration: one pydantic-settings object read from `DESCENT_*`.

Every process of a deployment (API, workers, `descent migrate`) reads the same variables,
so `DESCENT_DATABASE_URL=postgresql+psycopg://... descent worker` and the API agree on
the store. With nothing set, everything lives under `./descent-data` and needs no server.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DATABASE_FILE = "descent.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DESCENT_", frozen=True, validate_default=True)

    data_dir: Path = Field(
        Path("descent-data"), description="data sets, checkpoints, models and the SQLite file"
    )
    database_url: str = Field(
        "",
        description="a SQLAlchemy URL; empty means sqlite:///<data_dir>/descent.db",
    )
    broker_url: str | None = Field(
        None, description="the Celery broker (redis://...); None means the embedded one"
    )
    api_key: SecretStr | None = Field(
        None, description="made the first key instead of a random one (for scripts)"
    )

    # Limits a request is checked against before anything is queued. max_parameters and
    # max_memory_mb are the variables jobs.models.check_limits already reads.
    max_upload_mb: int = Field(200, gt=0)
    max_parameters: int = Field(1_000_000_000, gt=0)
    max_memory_mb: float | None = Field(None, gt=0)
    max_concurrent_jobs_per_key: int = Field(4, gt=0)

    # The lease is the truth about who runs a job: a worker renews it by heartbeat, and
    # the reaper re-publishes a job whose lease expired or that sat queued too long.
    lease_seconds: float = Field(20, gt=0)
    reaper_interval_seconds: float = Field(5, gt=0)
    queued_timeout_seconds: float = Field(30, gt=0)
    max_attempts: int = Field(3, ge=1)
    # How long a worker's training process may take to checkpoint and stop after it is
    # asked to (a cancel, the worker's shutdown) before it is killed.
    stop_grace_seconds: float = Field(60, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # Absolute, so that a worker's child process started in another directory opens
        # the same data dir (and the same SQLite file) as the API.
        return v.expanduser().resolve()

    @field_validator("database_url")
    @classmethod
    def _sqlite_in_data_dir(cls, v: str, info: ValidationInfo) -> str:
        data_dir = info.data.get("data_dir")
        if v or data_dir is None:  # no data_dir: its own error is already reported
            return v
        return f"sqlite:///{data_dir / DATABASE_FILE}"


@cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once (`get_settings.cache_clear()`
    makes the next call read it again)."""
    return Settings()
