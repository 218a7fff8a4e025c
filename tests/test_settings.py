"""The service's settings: defaults that need no server, DESCENT_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"DESCENT_{name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_keep_everything_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.data_dir == tmp_path.resolve() / "descent-data"
    assert settings.database_url == f"sqlite:///{settings.data_dir / 'descent.db'}"
    assert settings.broker_url is None  # the embedded broker
    assert settings.api_key is None
    assert (settings.max_upload_mb, settings.max_concurrent_jobs_per_key) == (200, 4)
    assert (settings.lease_seconds, settings.reaper_interval_seconds) == (20, 5)
    assert (settings.queued_timeout_seconds, settings.max_attempts) == (30, 3)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DESCENT_DATA_DIR", "elsewhere")
    monkeypatch.setenv("DESCENT_API_KEY", "k" * 40)
    monkeypatch.setenv("DESCENT_MAX_PARAMETERS", "1000")
    settings = Settings()
    assert settings.data_dir == tmp_path.resolve() / "elsewhere"  # absolute
    assert settings.database_url.endswith("/elsewhere/descent.db")
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k" * 40
    assert "k" * 40 not in repr(settings)
    assert settings.max_parameters == 1000
    monkeypatch.setenv("DESCENT_DATABASE_URL", "postgresql+psycopg://db/descent")
    assert Settings().database_url == "postgresql+psycopg://db/descent"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESCENT_LEASE_SECONDS", "0")
    with pytest.raises(ValidationError, match="lease_seconds"):
        Settings()


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        first = get_settings()
        monkeypatch.setenv("DESCENT_MAX_ATTEMPTS", "9")
        assert get_settings() is first and first.max_attempts == 3
        get_settings.cache_clear()
        assert get_settings().max_attempts == 9
    finally:
        get_settings.cache_clear()
