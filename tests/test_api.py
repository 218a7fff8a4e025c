"""The HTTP API through FastAPI's TestClient: keys, data sets, jobs, health, and a job
trained in-process by a stand-in for the worker, then downloaded and called.

Every test runs twice: on a fresh SQLite data dir and on a fresh PostgreSQL database
(the machine's own server, as in test_store.py; unreachable fails the run). The app and
its database live for the module; each test makes its own key, so tests see only their
own jobs and data sets, as users do.
"""

from __future__ import annotations

import copy
import io
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.numpy import load as load_safetensors
from sqlalchemy import event
from sqlalchemy.orm import Session
from test_store import fresh_postgres_database
from typer.testing import CliRunner

from descent.cli import app as cli
from jobs import training
from jobs.callbacks import Callbacks
from jobs.datasets.readers import read
from jobs.paths import job_dir, job_log
from jobs.settings import Settings
from jobs.spec import load_spec
from jobs.store import repository as repo
from jobs.store.models import JobStatus, MetricKind, Queue
from server.app import create_app

API = "/api/v1"
ADMIN_TOKEN = "admin-" + "k" * 40
UPLOAD_LIMIT_MB = 1
MAX_PARAMETERS = 200_000
EXAMPLE = json.loads((Path(__file__).parent.parent / "examples" / "digits-mlp.json").read_text())


def digits_spec(name: str = "digits", **training: Any) -> dict[str, Any]:
    """The digits example, tiny: a few steps."""
    spec = copy.deepcopy(EXAMPLE)
    spec["name"] = name
    spec["training"] = {"max_steps": 3, "seed": 0, **training}
    spec["scheduler"]["warmup_steps"] = 2  # within the run: a longer one is refused
    return spec


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FastAPI]:
    with ExitStack() as stack:
        database_url = ""  # the SQLite file in the data dir
        if request.param == "postgresql":
            url = stack.enter_context(fresh_postgres_database())
            database_url = url.render_as_string(hide_password=False)
        settings = Settings(
            data_dir=tmp_path_factory.mktemp(f"api-{request.param}"),
            database_url=database_url,
            api_key=ADMIN_TOKEN,
            max_upload_mb=UPLOAD_LIMIT_MB,
            max_parameters=MAX_PARAMETERS,
            # the tests' users queue many jobs no worker takes; one test lowers it
            max_concurrent_jobs_per_key=1000,
        )
        yield create_app(settings)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:  # runs the lifespan: migrations, the first key
        yield client


@pytest.fixture
def sessions(app: FastAPI) -> Any:
    return app.state.sessions


@pytest.fixture
def settings(app: FastAPI) -> Settings:
    return app.state.settings


@pytest.fixture
def use_job_queue(app: FastAPI) -> Iterator[Callable[[Any], None]]:
    """Swaps the app's JobQueue for the test's, and back after it (monkeypatch would
    delete a Starlette State attribute on the way out instead of restoring it)."""
    original = app.state.job_queue

    def use(job_queue: Any) -> None:
        app.state.job_queue = job_queue

    yield use
    app.state.job_queue = original


def new_key(client: TestClient, *, admin: bool = False) -> dict[str, str]:
    response = client.post(
        f"{API}/keys", json={"name": "test", "admin": admin}, headers=bearer(ADMIN_TOKEN)
    )
    assert response.status_code == 201, response.text
    return bearer(response.json()["secret"])


@pytest.fixture
def user(client: TestClient) -> dict[str, str]:
    """A fresh non-admin key: the test's own user, with no jobs or data sets yet."""
    return new_key(client)


@pytest.fixture
def other(client: TestClient) -> dict[str, str]:
    return new_key(client)


def create_job(
    client: TestClient, headers: dict[str, str], spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = client.post(f"{API}/jobs", json=spec or digits_spec(), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def upload(client: TestClient, headers: dict[str, str], filename: str, content: bytes) -> Any:
    return client.post(
        f"{API}/datasets",
        files={"file": (filename, content, "application/octet-stream")},
        data={"name": filename},
        headers=headers,
    )


def small_npz() -> bytes:
    rng = np.random.default_rng(0)
    return npz_bytes(rng.normal(size=(30, 4)).astype(np.float32), np.arange(30) % 3)


# ---------------------------------------------------------------- keys and auth


def test_requests_without_a_valid_key_are_401(client: TestClient) -> None:
    missing = client.get(f"{API}/jobs")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    assert client.get(f"{API}/jobs", headers=bearer("dsk_not-a-key")).status_code == 401
    assert client.get(f"{API}/jobs", headers={"Authorization": "Basic abc"}).status_code == 401


def test_keys_are_managed_by_admin_keys_only(client: TestClient, user: dict[str, str]) -> None:
    for method, path in (("POST", "/keys"), ("GET", "/keys"), ("DELETE", "/keys/1")):
        response = client.request(method, API + path, json={"name": "x"}, headers=user)
        assert response.status_code == 403, (method, path)
    admin = bearer(ADMIN_TOKEN)
    created = client.post(f"{API}/keys", json={"name": "ci", "admin": True}, headers=admin)
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith(body["prefix"]) and body["admin"]
    listed = client.get(f"{API}/keys", headers=admin).json()
    assert body["id"] in [k["id"] for k in listed]
    assert all("secret" not in k and "secret_hash" not in k for k in listed)
    assert client.get(f"{API}/jobs", headers=bearer(body["secret"])).status_code == 200
    assert client.delete(f"{API}/keys/{body['id']}", headers=admin).status_code == 204
    assert client.get(f"{API}/jobs", headers=bearer(body["secret"])).status_code == 401
    assert client.delete(f"{API}/keys/{body['id']}", headers=admin).status_code == 404
    assert client.delete(f"{API}/keys/not-a-number", headers=admin).status_code == 422


# ---------------------------------------------------------------- data sets


def test_an_upload_is_validated_summarised_and_owned(
    client: TestClient, settings: Settings, user: dict[str, str], other: dict[str, str]
) -> None:
    response = upload(client, user, "three classes.npz", small_npz())
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["summary"] == {
        "task": "classification",
        "rows": 30,
        "input_shape": [4],
        "classes": [0, 1, 2],
        "vocab_size": None,
    }
    assert dataset["format"] == "npz" and not dataset["builtin"]
    stored = settings.data_dir / "datasets" / dataset["id"] / "three_classes.npz"
    assert stored.is_file()

    listed = {d["id"]: d for d in client.get(f"{API}/datasets", headers=user).json()}
    assert listed.keys() == {"builtin:digits", "builtin:pydocs", dataset["id"]}
    assert listed["builtin:digits"]["builtin"]
    assert listed["builtin:digits"]["summary"]["rows"] == 1797
    assert listed["builtin:pydocs"]["summary"]["task"] == "language_model"
    assert client.get(f"{API}/datasets/builtin:digits", headers=user).status_code == 200
    assert client.get(f"{API}/datasets/{dataset['id']}", headers=user).json() == dataset

    # another key neither sees nor deletes it
    assert dataset["id"] not in [
        d["id"] for d in client.get(f"{API}/datasets", headers=other).json()
    ]
    assert client.get(f"{API}/datasets/{dataset['id']}", headers=other).status_code == 404
    assert client.delete(f"{API}/datasets/{dataset['id']}", headers=other).status_code == 404
    assert client.delete(f"{API}/datasets/builtin:digits", headers=user).status_code == 403

    assert client.delete(f"{API}/datasets/{dataset['id']}", headers=user).status_code == 204
    assert not stored.parent.exists()
    assert client.get(f"{API}/datasets/{dataset['id']}", headers=user).status_code == 404


@pytest.mark.parametrize("megabytes", [1.5, 3])  # caught by the route; by the size limit first
def test_an_upload_over_the_limit_is_413(
    client: TestClient, settings: Settings, user: dict[str, str], megabytes: float
) -> None:
    response = upload(client, user, "big.txt", b"a" * int(megabytes * 2**20))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"] or "over" in response.json()["detail"]
    assert not list((settings.data_dir / "datasets").glob("*/big.txt"))


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("broken.npz", b"PK\x03\x04 not really a zip", "malformed .npz"),
        ("table.csv", b"a,b\n1,2\n", "no label column 'label'"),
        ("ragged.npz", npz_bytes(np.zeros((3, 2)), np.zeros(4, dtype=np.int64)), "3 samples"),
        ("notes.exe", b"MZ", "unknown file type"),
    ],
)
def test_a_malformed_upload_is_422_with_the_reason(
    client: TestClient, user: dict[str, str], filename: str, content: bytes, reason: str
) -> None:
    response = upload(client, user, filename, content)
    assert response.status_code == 422
    body = response.json()
    assert body["source"] == filename and reason in body["detail"]
    assert "/" not in body["detail"].split(":")[0]  # the client's name, not the server's path
    assert [
        d["id"] for d in client.get(f"{API}/datasets", headers=user).json() if not d["builtin"]
    ] == []


# ---------------------------------------------------------------- creating jobs


def test_a_job_is_created_queued_and_published(
    client: TestClient, user: dict[str, str], use_job_queue: Callable[[Any], None]
) -> None:
    published: list[tuple[str, Queue, int]] = []

    class RecordingQueue:
        def publish(self, job_id: str, queue: Queue, priority: int) -> None:
            published.append((job_id, queue, priority))

        def ready(self) -> bool:
            return True

    use_job_queue(RecordingQueue())
    job = create_job(client, user)
    assert job["status"] == "queued" and job["queue"] == "cpu" and job["attempts"] == 0
    assert job["progress"] == {"step": 0, "total_steps": None, "epoch": 0, "eta_seconds": None}
    assert job["spec"]["training"]["max_steps"] == 3
    assert published == [(job["id"], Queue.cpu, 5)]
    assert client.get(f"{API}/jobs/{job['id']}", headers=user).json() == job


def test_a_failing_publish_still_creates_the_job(
    client: TestClient, user: dict[str, str], use_job_queue: Callable[[Any], None]
) -> None:
    class DownBroker:
        def publish(self, job_id: str, queue: Queue, priority: int) -> None:
            raise ConnectionError("broker down")

        def ready(self) -> bool:
            return False

    use_job_queue(DownBroker())
    assert create_job(client, user)["status"] == "queued"  # the reaper publishes it later
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "broker": "unreachable"}


def test_an_idempotency_key_returns_the_same_job(client: TestClient, user: dict[str, str]) -> None:
    headers = {**user, "Idempotency-Key": "retry-1"}
    first = client.post(f"{API}/jobs", json=digits_spec(), headers=headers)
    again = client.post(f"{API}/jobs", json=digits_spec(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    changed = client.post(f"{API}/jobs", json=digits_spec("changed"), headers=headers)
    assert changed.status_code == 422 and "another spec" in changed.json()["detail"]
    jobs = client.get(f"{API}/jobs", headers=user).json()["items"]
    assert [j["id"] for j in jobs] == [first.json()["id"]]


def _with(spec: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target = spec
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (("training", "max_steps"), "training.max_steps", "greater than 0"),
        (("optimizer", "betaz"), "optimizer.betaz", "unexpected argument for AdamW"),
        (("model", "layers", 0, "in_features"), "model.layers[0]", "Linear expects 63"),
        (("data", "batch_size"), "data.batch_size", "greater than 0"),
        # a warm-up past the run's 3 steps: refused here, not failed on the worker
        (("scheduler", "warmup_steps"), "scheduler", "at least warmup_steps (20), got 3"),
    ],
    ids=["bad-field", "bad-component", "model-does-not-fit", "bad-data-section", "bad-schedule"],
)
def test_a_bad_spec_is_422_naming_where(
    client: TestClient, user: dict[str, str], change: tuple[Any, ...], path: str, reason: str
) -> None:
    value = {
        "max_steps": 0,
        "betaz": [0.9, 0.99],
        "in_features": 63,
        "batch_size": -1,
        "warmup_steps": 20,
    }[next(p for p in reversed(change) if isinstance(p, str))]
    response = client.post(f"{API}/jobs", json=_with(digits_spec(), change, value), headers=user)
    assert response.status_code == 422
    body = response.json()
    assert body["path"] == path and reason in body["detail"], body
    assert client.get(f"{API}/jobs", headers=user).json()["items"] == []


def test_limits_are_checked_before_queueing(client: TestClient, user: dict[str, str]) -> None:
    wide = digits_spec()
    wide["model"] = {"architecture": "mlp", "args": {"hidden": [1024, 1024]}}
    response = client.post(f"{API}/jobs", json=wide, headers=user)
    assert response.status_code == 422
    assert response.json()["path"] == "model" and "limit of 200,000" in response.json()["detail"]
    tight = digits_spec()
    tight["resources"] = {"memory_limit_mb": 0.001}
    assert client.post(f"{API}/jobs", json=tight, headers=user).status_code == 422


def test_a_huge_model_is_refused_without_being_allocated(
    client: TestClient, user: dict[str, str]
) -> None:
    huge = digits_spec()
    # 40 billion parameters, 160 GB of float32: sized on the meta device, never built
    huge["model"] = {
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "in_features": 64, "out_features": 200_000},
            {"type": "Linear", "in_features": 200_000, "out_features": 200_000},
        ]
    }
    tracemalloc.start()
    try:
        start = time.perf_counter()
        response = client.post(f"{API}/jobs", json=huge, headers=user)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["path"] == "model" and "exceed the limit of 200,000" in body["detail"], body
    assert seconds < 1
    assert peak < 64 * 2**20  # the request and the digits data set; the layer would be 160 GB
    assert client.get(f"{API}/jobs", headers=user).json()["items"] == []


def padded_cnn(padding: int, pool: int = 2) -> dict[str, Any]:
    """The digits-cnn example, its second Conv2d padded by `padding` (64 maps of
    (2 * padding + 2)**2 floats a sample: 1 GB at 1000, 26 GB at 5000) and the pooling
    after it of kernel `pool`."""
    spec = json.loads((Path(__file__).parent.parent / "examples" / "digits-cnn.json").read_text())
    spec["training"] = {"max_steps": 3, "seed": 0}
    spec["scheduler"] = None
    spec["model"]["layers"][4]["padding"] = padding
    spec["model"]["layers"][6]["kernel_size"] = pool
    return spec


def post_traced(
    client: TestClient, user: dict[str, str], spec: dict[str, Any]
) -> tuple[Any, float, int]:
    """The answer to POST /jobs, its seconds and the peak bytes traced while it ran."""
    tracemalloc.start()
    try:
        start = time.perf_counter()
        response = client.post(f"{API}/jobs", json=spec, headers=user)
        return response, time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("padding", [1000, 5000])
def test_activations_of_gigabytes_are_refused_without_being_allocated(
    app: FastAPI, client: TestClient, user: dict[str, str], padding: int
) -> None:
    # as the fuzzer sent it: the Linear after it no longer fits, found on the meta device
    response, seconds, peak = post_traced(client, user, padded_cnn(padding))
    assert response.status_code == 422, response.text
    assert response.json()["path"] == "model.layers[9]"
    assert "Linear expects 256 input features" in response.json()["detail"]
    assert seconds < 1 and peak < 32 * 2**20  # the request and the digits data set
    # pooled back to the 2 x 2 maps the Linear takes: only the memory limits refuse it
    fitted = padded_cnn(padding, padding + 1)
    service = app.state.settings
    app.state.settings = service.model_copy(update={"max_memory_mb": 4096})
    try:
        response, seconds, peak = post_traced(client, user, fitted)
    finally:
        app.state.settings = service
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["path"] == "resources.memory_limit_mb", body
    assert body["detail"].startswith("resources.memory_limit_mb: the run needs about ") and (
        "MB at batch size 64, over the limit of 4,096 MB (DESCENT_MAX_MEMORY_MB)" in body["detail"]
    )
    assert seconds < 1 and peak < 32 * 2**20
    fitted["resources"] = {"memory_limit_mb": 4096}
    response, seconds, peak = post_traced(client, user, fitted)
    assert (
        response.status_code == 422 and "(resources.memory_limit_mb)" in response.json()["detail"]
    )
    assert client.get(f"{API}/jobs", headers=user).json()["items"] == []
    # no limit anywhere: accepted, still without allocating it; the worker's run is bound
    # by its own DESCENT_MAX_MEMORY_MB and the spec's resources.memory_limit_mb
    del fitted["resources"]
    response, seconds, peak = post_traced(client, user, fitted)
    assert response.status_code == 201, response.text
    assert seconds < 1 and peak < 32 * 2**20


def test_a_spec_names_only_its_own_data_sets(
    client: TestClient, user: dict[str, str], other: dict[str, str]
) -> None:
    dataset = upload(client, user, "mine.npz", small_npz()).json()
    for train in (dataset["id"], f"dataset:{dataset['id']}"):
        spec = digits_spec()
        spec["model"] = {"architecture": "mlp", "args": {"hidden": [8]}}
        spec["data"] = {"train": train, "batch_size": 4, "validation_split": 0.2}
        job = create_job(client, user, spec)
        # stored as the reference, never the server's path: the spec can be sent again
        assert job["spec"]["data"]["train"] == f"dataset:{dataset['id']}"
        again = client.post(f"{API}/jobs", json=job["spec"], headers=user)
        assert again.status_code == 201

        theirs = client.post(f"{API}/jobs", json=spec, headers=other)
        assert theirs.status_code == 422 and theirs.json()["path"] == "data.train"
    # the data's own errors name the data set as the spec did, not the server's file
    spec["data"]["validation_split"] = 0.01  # no sample of 30 left for validation
    unusable = client.post(f"{API}/jobs", json=spec, headers=user)
    assert unusable.status_code == 422, unusable.text
    assert unusable.json()["source"] == f"dataset:{dataset['id']}"
    assert "validation part empty" in unusable.json()["detail"]
    for train in ("/etc/passwd", "../descent.db", "dataset:nope"):
        spec = digits_spec()
        spec["data"]["train"] = train
        response = client.post(f"{API}/jobs", json=spec, headers=user)
        assert response.status_code == 422 and response.json()["path"] == "data.train"
    spec = digits_spec()
    spec["data"]["train"] = "builtin:nope"
    unknown = client.post(f"{API}/jobs", json=spec, headers=user)
    assert unknown.status_code == 422 and unknown.json()["source"] == "builtin:nope"


# ---------------------------------------------------------------- reading and changing jobs


def test_another_keys_job_is_not_found(
    client: TestClient, user: dict[str, str], other: dict[str, str]
) -> None:
    job_id = create_job(client, user)["id"]
    for method, path in (
        ("GET", ""),
        ("POST", "/cancel"),
        ("DELETE", ""),
        ("GET", "/metrics"),
        ("GET", "/events"),
        ("GET", "/checkpoints"),
        ("GET", "/checkpoints/1"),
        ("GET", "/model"),
        ("POST", "/predict"),
    ):
        for job in (job_id, "00000000-0000-0000-0000-000000000000", "not-an-id"):
            body = {"inputs": [[0.0] * 64]} if path == "/predict" else None
            response = client.request(method, f"{API}/jobs/{job}{path}", json=body, headers=other)
            assert response.status_code == 404, (method, path, job, response.text)
    assert client.get(f"{API}/jobs/{job_id}", headers=user).json()["status"] == "queued"


def test_jobs_are_listed_newest_first_a_page_at_a_time(
    client: TestClient, user: dict[str, str]
) -> None:
    created = [create_job(client, user, digits_spec(f"job-{i}"))["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"{API}/jobs", params=params, headers=user).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1] and pages == 3
    client.post(f"{API}/jobs/{created[0]}/cancel", headers=user)
    cancelled = client.get(f"{API}/jobs", params={"status": "cancelled"}, headers=user).json()
    assert [j["id"] for j in cancelled["items"]] == [created[0]]
    for params in ({"cursor": "garbage"}, {"status": "sleeping"}, {"limit": 0}):
        assert client.get(f"{API}/jobs", params=params, headers=user).status_code == 422


def test_cancel_a_queued_job_and_not_a_finished_one(
    client: TestClient, sessions: Any, user: dict[str, str]
) -> None:
    job_id = create_job(client, user)["id"]
    cancelled = client.post(f"{API}/jobs/{job_id}/cancel", headers=user)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"{API}/jobs/{job_id}/cancel", headers=user).json()["status"] == "cancelled"

    done_id = create_job(client, user)["id"]
    with sessions() as session:
        repo.finish_job(session, done_id, JobStatus.succeeded)
    finished = client.post(f"{API}/jobs/{done_id}/cancel", headers=user)
    assert finished.status_code == 409 and "already succeeded" in finished.json()["detail"]


def test_a_new_job_has_no_metrics_events_checkpoints_or_model(
    client: TestClient, user: dict[str, str]
) -> None:
    job_id = create_job(client, user)["id"]
    for path in ("metrics", "events", "checkpoints"):
        response = client.get(f"{API}/jobs/{job_id}/{path}", headers=user)
        assert response.status_code == 200 and response.json() == [], path
    model = client.get(f"{API}/jobs/{job_id}/model", headers=user)
    assert model.status_code == 404 and "no model yet" in model.json()["detail"]
    assert (
        client.post(
            f"{API}/jobs/{job_id}/predict", json={"inputs": [[0] * 64]}, headers=user
        ).status_code
        == 404
    )


def test_events_stream_live_until_the_job_ends(
    client: TestClient, sessions: Any, user: dict[str, str]
) -> None:
    job_id = create_job(client, user)["id"]
    with sessions() as session:
        repo.record_events(session, job_id, [("info", "before the stream")])

    def worker() -> None:
        time.sleep(0.3)
        with sessions() as session:
            repo.record_events(session, job_id, [("info", "while streaming")])
            repo.finish_job(session, job_id, JobStatus.failed, error="boom")

    thread = threading.Thread(target=worker)
    thread.start()
    headers = {**user, "Accept": "text/event-stream"}
    with client.stream("GET", f"{API}/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    thread.join()
    messages = [m for m in text.split("\n\n") if m]
    data = [json.loads(m.split("data: ", 1)[1]) for m in messages[:-1]]
    assert [d["message"] for d in data] == ["before the stream", "while streaming"]
    assert messages[0].startswith(f"id: {data[0]['id']}\n")
    assert messages[-1] == 'event: end\ndata: {"status": "failed"}'

    # a reconnecting client resumes after the last id it saw
    resumed = client.get(
        f"{API}/jobs/{job_id}/events", headers={**headers, "Last-Event-ID": str(data[0]["id"])}
    )
    assert "before the stream" not in resumed.text and "while streaming" in resumed.text


def test_only_a_finished_job_is_deleted_with_its_files(
    client: TestClient, sessions: Any, settings: Settings, user: dict[str, str]
) -> None:
    job_id = create_job(client, user)["id"]
    deleted = client.delete(f"{API}/jobs/{job_id}", headers=user)
    assert deleted.status_code == 409 and "queued" in deleted.json()["detail"]
    folder = job_dir(settings, job_id)
    (folder / "checkpoints").mkdir(parents=True)
    with sessions() as session:
        repo.record_events(session, job_id, [("info", "x")])
        repo.finish_job(session, job_id, JobStatus.cancelled)
    assert client.delete(f"{API}/jobs/{job_id}", headers=user).status_code == 204
    assert not folder.exists()
    assert client.get(f"{API}/jobs/{job_id}", headers=user).status_code == 404


# ---------------------------------------------------------------- health


def test_health_readiness_and_metrics(client: TestClient, user: dict[str, str]) -> None:
    create_job(client, user)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (
        'descent_http_requests_total{method="POST",route="/api/v1/jobs",status="201"}'
        in metrics.text
    )
    assert 'descent_jobs{status="queued"}' in metrics.text
    assert "descent_jobs_created_total" in metrics.text


# ---------------------------------------------------------------- no input makes a 500

JUNK_BODIES: list[dict[str, Any]] = [
    {"content": b"\xff\xfe{not json"},
    {"json": []},
    {"json": "x"},
    {"json": {"name": "\x00", "inputs": [[None]], "model": 1}},
    {"json": {"inputs": [["a", {}]], "max_tokens": 10**30}},
    # valid where a spec or a key is expected, but PostgreSQL text cannot hold a NUL
    {"json": digits_spec("nul\x00")},
    {"json": {"name": "nul\x00"}},
    {"files": {"file": ("x\x00.npz", b"\x00" * 10)}, "data": {"name": "\x00"}},
    {"files": {"file": ("", b"")}, "data": {"name": ""}},
    {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
]


def test_no_route_answers_500_to_junk(
    client: TestClient, app: FastAPI, user: dict[str, str]
) -> None:
    job_id = create_job(client, user)["id"]
    admin = bearer(ADMIN_TOKEN)
    ids = ["00000000-0000-0000-0000-000000000000", "%00", "x" * 300, "-1", job_id]
    for path, methods in app.openapi()["paths"].items():
        for method in methods:
            for value in ids:
                url = path.replace("{job_id}", value).replace("{dataset_id}", value)
                url = url.replace("{key_id}", value).replace("{step}", value)
                for body in JUNK_BODIES:
                    headers = {**admin, **body.get("headers", {})}
                    request = {k: v for k, v in body.items() if k != "headers"}
                    response = client.request(method.upper(), url, headers=headers, **request)
                    assert response.status_code < 500, (method, url, body, response.text)
                    assert response.status_code < 300 or "detail" in response.json()


# ---------------------------------------------------------------- a job trained end to end


class StoreCallbacks(Callbacks):
    """What the worker slice's callbacks do, minimally: rows in the store."""

    def __init__(self, session: Session, job_id: str) -> None:
        self.session, self.job_id = session, job_id

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        repo.record_metrics(self.session, self.job_id, [(step, MetricKind.step, metrics)])

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        repo.record_metrics(self.session, self.job_id, [(step, MetricKind.eval, metrics)])

    def on_event(self, kind: str, message: str) -> None:
        repo.record_events(self.session, self.job_id, [(kind, message)])

    def on_checkpoint(self, step: int, path: Path) -> None:
        repo.record_checkpoint(self.session, self.job_id, step, str(path), path.stat().st_size)


def test_a_trained_job_serves_its_model_and_predictions(
    client: TestClient, sessions: Any, settings: Settings, user: dict[str, str]
) -> None:
    spec = digits_spec(max_steps=20, checkpoint_every_steps=10, eval_every_steps=10)
    job = create_job(client, user, spec)
    with sessions() as session:  # the worker's part
        assert repo.claim_job(session, job["id"], "test-worker", datetime.now(UTC), 60)
        result = training.run(
            load_spec(job["spec"]),
            job_dir=job_dir(settings, job["id"]),
            callbacks=StoreCallbacks(session, job["id"]),
            device="cpu",
        )
        assert repo.finish_job(session, job["id"], JobStatus.succeeded, worker_id="test-worker")
    assert result.model_path is not None
    url = f"{API}/jobs/{job['id']}"

    assert client.get(url, headers=user).json()["status"] == "succeeded"
    metrics = client.get(f"{url}/metrics", headers=user).json()
    assert {m["kind"] for m in metrics} == {"step", "eval"} and metrics[-1]["step"] == 20
    assert [
        m["step"]
        for m in client.get(f"{url}/metrics", params={"after_step": 18}, headers=user).json()
    ] == [19, 20, 20]
    events = client.get(f"{url}/events", headers=user).json()
    assert any("model saved" in e["message"] for e in events)
    stream = client.get(f"{url}/events", headers={**user, "Accept": "text/event-stream"})
    assert stream.text.count("data: ") == len(events) + 1  # and the end event

    checkpoints = client.get(f"{url}/checkpoints", headers=user).json()
    assert [c["step"] for c in checkpoints] == [10, 20]
    checkpoint = client.get(f"{url}/checkpoints/20", headers=user)
    assert checkpoint.status_code == 200 and "0.weight" in load_safetensors(checkpoint.content)
    assert client.get(f"{url}/checkpoints/15", headers=user).status_code == 404

    model = client.get(f"{url}/model", headers=user)
    assert model.status_code == 200
    assert model.content == result.model_path.read_bytes()

    digits = read("builtin:digits", label_column="label")
    samples = digits.x[:5].tolist()
    response = client.post(f"{url}/predict", json={"inputs": samples}, headers=user)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = training.load_trained_model(result.model_path).predict(np.array(samples))
    assert body["task"] == "classification" and body["classes"] == list(range(10))
    assert body["labels"] == expected.tolist()
    assert np.allclose(np.sum(body["probabilities"], axis=1), 1.0, atol=1e-5)

    for inputs in ([[1.0] * 63], [[1.0] * 64, [1.0]], [["a"] * 64], samples[0]):
        bad = client.post(f"{url}/predict", json={"inputs": inputs}, headers=user)
        assert bad.status_code == 422 and bad.json()["source"] in {"input", "inputs"}, bad.text

    assert client.delete(url, headers=user).status_code == 204
    assert not job_dir(settings, job["id"]).exists()
    assert client.post(f"{url}/predict", json={"inputs": samples}, headers=user).status_code == 404


# ---------------------------------------------------------------- descent serve


@pytest.mark.parametrize("from_env", [False, True])
def test_descent_serve_prints_the_url_and_a_key_that_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, from_env: bool
) -> None:
    served: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append((app, options)))
    for name in ("DATABASE_URL", "API_KEY", "BROKER_URL"):
        monkeypatch.delenv(f"DESCENT_{name}", raising=False)
    # serve passes --data-dir on through the environment (to the Celery app and its
    # workers): set here, so that it is restored after the test
    monkeypatch.setenv("DESCENT_DATA_DIR", "unused")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "unused")  # and its API processes'
    if from_env:
        monkeypatch.setenv("DESCENT_API_KEY", ADMIN_TOKEN)
    args = ["serve", "--data-dir", str(tmp_path), "--port", "8123", "--no-worker"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8123/api/v1" in result.output
    assert "workers: 0" in result.output
    if from_env:
        token = ADMIN_TOKEN
        assert "DESCENT_API_KEY" in result.output and ADMIN_TOKEN not in result.output
    else:
        token = result.output.split("shown once): ", 1)[1].split()[0]
    app, options = served[0]
    assert options["factory"] and options["workers"] >= 1
    # what each API process runs: the factory that the import string names
    with TestClient(uvicorn.importer.import_from_string(app)()) as client:
        assert client.get(f"{API}/keys", headers=bearer(token)).status_code == 200
    assert (tmp_path / "descent.db").is_file()


def test_a_server_fault_is_still_a_json_error(app: FastAPI, client: TestClient) -> None:
    # a store that fails under the request: a fault of ours, not the client's input
    def broken_session() -> Any:
        raise RuntimeError("the store fell over")

    original = app.state.sessions, app.state.read_sessions
    app.state.sessions = app.state.read_sessions = broken_session
    try:
        faulty = TestClient(app, raise_server_exceptions=False)
        responses = [
            faulty.get(f"{API}/jobs", headers=bearer(ADMIN_TOKEN)),
            faulty.post(f"{API}/jobs", json=digits_spec(), headers=bearer(ADMIN_TOKEN)),
        ]
    finally:
        app.state.sessions, app.state.read_sessions = original
    for response in responses:
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error; the server's log has the details"}


def test_a_get_reads_without_a_transaction_on_postgresql(
    app: FastAPI, client: TestClient, user: dict[str, str]
) -> None:
    # a read's statements alone: psycopg in autocommit sends no BEGIN before them and no
    # ROLLBACK after (two of a read's round trips); a write keeps its transaction
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        autocommit = getattr(conn.connection.dbapi_connection, "autocommit", False)
        seen.append((statement.split(maxsplit=1)[0].upper(), bool(autocommit)))

    event.listen(app.state.engine, "before_cursor_execute", record)
    try:
        assert client.get(f"{API}/jobs", headers=user).status_code == 200
        reads, seen[:] = list(seen), []
        create_job(client, user)
        writes = list(seen)
    finally:
        event.remove(app.state.engine, "before_cursor_execute", record)
    assert [kind for kind, _ in reads].count("SELECT") == 2  # the key, the page
    postgres = app.state.engine.dialect.name == "postgresql"
    assert all(autocommit is postgres for _, autocommit in reads), reads
    assert any(kind == "INSERT" for kind, _ in writes)
    assert not any(autocommit for _, autocommit in writes), writes


def test_resume_requeues_a_cancelled_or_failed_job_and_refuses_others(
    client: TestClient,
    sessions: Any,
    user: dict[str, str],
    other: dict[str, str],
    use_job_queue: Callable[[Any], None],
) -> None:
    published: list[str] = []

    class Recording:
        def publish(self, job_id: str, queue: str, priority: int) -> None:
            published.append(job_id)

        def ready(self) -> bool:
            return True

    use_job_queue(Recording())
    job_id = create_job(client, user)["id"]
    queued = client.post(f"{API}/jobs/{job_id}/resume", headers=user)
    assert queued.status_code == 409 and "only a failed or cancelled" in queued.json()["detail"]
    client.post(f"{API}/jobs/{job_id}/cancel", headers=user)
    assert client.post(f"{API}/jobs/{job_id}/resume", headers=other).status_code == 404
    resumed = client.post(f"{API}/jobs/{job_id}/resume", headers=user)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "queued" and resumed.json()["attempts"] == 0
    assert published[-1] == job_id
    with sessions() as session:
        repo.finish_job(session, job_id, JobStatus.succeeded)
    assert client.post(f"{API}/jobs/{job_id}/resume", headers=user).status_code == 409


def test_logs_are_the_training_output_and_empty_before_a_worker_starts(
    client: TestClient, settings: Settings, user: dict[str, str], other: dict[str, str]
) -> None:
    job_id = create_job(client, user)["id"]
    empty = client.get(f"{API}/jobs/{job_id}/logs", headers=user)
    assert empty.status_code == 200 and empty.text == ""
    log_file = job_log(settings, job_id)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("step 1 loss 2.3\n")
    assert client.get(f"{API}/jobs/{job_id}/logs", headers=user).text == "step 1 loss 2.3\n"
    assert client.get(f"{API}/jobs/{job_id}/logs", headers=other).status_code == 404


def test_a_key_over_its_concurrent_job_limit_gets_429_but_its_retries_still_answer(
    app: FastAPI, client: TestClient, settings: Settings, user: dict[str, str]
) -> None:
    app.state.settings = settings.model_copy(update={"max_concurrent_jobs_per_key": 3})
    try:
        first = client.post(
            f"{API}/jobs", json=digits_spec(), headers={**user, "Idempotency-Key": "first"}
        )
        assert first.status_code == 201
        for _ in range(2):
            create_job(client, user)
        over = client.post(f"{API}/jobs", json=digits_spec(), headers=user)
        assert over.status_code == 429 and "queued or running jobs" in over.json()["detail"]
        retry = client.post(
            f"{API}/jobs", json=digits_spec(), headers={**user, "Idempotency-Key": "first"}
        )
        assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    finally:
        app.state.settings = settings
