"""The service as it runs: `descent serve --no-worker` (the API and the reaper) and
`descent worker` processes, each a real process, observed through HTTP as a client sees
them. Every test runs on two set-ups: the embedded default (SQLite and the filesystem
broker in a fresh data dir) and a deployment's (a fresh PostgreSQL database and an empty
Redis db number on the machine's own servers; unreachable fails the run). The main tier
runs the core flow and SIGKILL recovery on both, cancel and the memory limit on the
embedded one; the slow tier runs those two on the second, and the full digits example,
the SIGTERM hand-back and the grace kill on both.

Some tests freeze a running job's data loader processes (SIGSTOP) so that the job stops
between two steps exactly where the test says: after checkpoint k and before k+1, or
until a stop request has reached it, or for longer than the worker's grace.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from safetensors.numpy import load, load_file
from test_store import fresh_postgres_database

from jobs import training
from jobs.callbacks import Callbacks
from jobs.datasets.readers import read
from jobs.settings import Settings, get_settings
from jobs.spec import load_spec

API = "/api/v1"
TOKEN = "workers-" + "k" * 40
ROOT = Path(__file__).parent.parent
EXAMPLE = json.loads((ROOT / "examples" / "digits-mlp.json").read_text())
LEASE_SECONDS = 8  # heartbeats every lease/3 s: room for a loaded 2-core CI machine
START_TIMEOUT = 30.0
JOB_TIMEOUT = 60.0
REDIS_URL = os.environ.get("DESCENT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_CLAIM = "descent-test-claim"  # set in the db number a run took, until it is flushed
FINISHED = {"succeeded", "failed", "cancelled"}

EMBEDDED, POSTGRES_REDIS = "embedded", "postgres+redis"
on_both = pytest.mark.parametrize("service", [EMBEDDED, POSTGRES_REDIS], indirect=True)
on_both_second_slow = pytest.mark.parametrize(  # in the main tier on the embedded one only
    "service", [EMBEDDED, pytest.param(POSTGRES_REDIS, marks=pytest.mark.slow)], indirect=True
)


def digits_spec(name: str, **training_options: Any) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE)
    spec["name"] = name
    spec["training"] = {"seed": 0, "checkpoint_every_steps": 10, **training_options}
    spec["scheduler"]["warmup_steps"] = 2  # within the shortest run: a longer one is refused
    return spec


RESUMABLE_STEPS = 400


def resumable_spec(name: str) -> dict[str, Any]:
    """400 steps, 180 an epoch: long enough that a test freezes it well before its end,
    mid-epoch; two data loader processes, for the tests to freeze."""
    spec = digits_spec(name, max_steps=RESUMABLE_STEPS, eval_every_steps=100)
    spec["data"] |= {"batch_size": 8, "workers": 2}
    return spec


def eventually(condition: Callable[[], Any], what: str, timeout: float = JOB_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fresh_redis_db() -> Iterator[str]:
    """The URL of an empty Redis db number (1-15, claimed with a key so that parallel
    runs pick different ones), flushed on the way out; no other db is touched."""
    for number in range(1, 16):
        db = redis.Redis.from_url(REDIS_URL, db=number, socket_connect_timeout=5)
        try:
            if db.dbsize() == 0 and db.set(REDIS_CLAIM, "1", nx=True):
                break
        except redis.ConnectionError as e:
            pytest.fail(
                f"Redis at {REDIS_URL} is unreachable, and the worker tests need it: start "
                f"it (.ci/run does) or set DESCENT_TEST_REDIS_URL ({e})",
                pytrace=False,
            )
        db.close()
    else:
        pytest.fail(f"no empty db number left on the Redis at {REDIS_URL}", pytrace=False)
    try:
        yield f"{REDIS_URL}/{number}"
    finally:
        db.flushdb()
        db.close()


# ---------------------------------------------------------------- processes


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...] (no psutil here)."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # gone meanwhile
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    found, parents = [], [pid]
    while parents:
        kids = children(parents.pop())
        found += kids
        parents += kids
    return found


def alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def wait_until_idle(pid: int) -> None:
    """Until `pid` uses (almost) no CPU for half a second: blocked, not training."""

    def cpu_ticks() -> int:
        try:
            return sum(int(field) for field in _stat(pid)[11:13])  # utime + stime
        except FileNotFoundError:
            raise AssertionError(f"process {pid} ended before it went idle") from None

    def idle() -> bool:
        ticks = cpu_ticks()
        time.sleep(0.5)
        return cpu_ticks() - ticks <= 2

    eventually(idle, f"process {pid} to go idle", timeout=20)


class Processes:
    """Starts `python -m descent ...` processes, each in its own session, and kills
    every one it started (with any child it left) on the way out."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []
        self.log_paths: dict[int, Path] = {}

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        path = self.logs / f"{args[0]}-{len(self.started)}.log"
        with path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "descent", *args],
                env={**self.env, **env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, for the clean-up below
            )
        self.started.append(process)
        self.log_paths[process.pid] = path
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return self.log_paths[process.pid].read_text(errors="replace")

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """A graceful stop (SIGTERM: a worker's warm shutdown), then the whole group."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError):  # a runner child left behind, if any
            os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)


# ---------------------------------------------------------------- the service


class Service:
    def __init__(
        self,
        setup: str,
        client: httpx.Client,
        processes: Processes,
        data_dir: Path,
        redis_db: redis.Redis | None,
    ) -> None:
        self.setup = setup
        self.client = client
        self.processes = processes
        self.data_dir = data_dir
        self.redis = redis_db

    def worker(self, **env: str) -> subprocess.Popen[bytes]:
        return self.processes.start("worker", **env)

    def runner(self, worker: subprocess.Popen[bytes]) -> int:
        """The pid of the training process `worker` started."""

        def find() -> int | None:
            for pid in children(worker.pid):
                with contextlib.suppress(FileNotFoundError):
                    if b"workers.runner" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return pid
            return None

        return int(eventually(find, f"worker {worker.pid}'s training process"))

    def freeze_loader(self, worker: subprocess.Popen[bytes]) -> tuple[int, list[int]]:
        """Stops (SIGSTOP) the data loader processes of the job that `worker` trains, and
        waits until its training process, short of batches, waits between two steps for
        good. The pids of that process and of the frozen ones."""
        runner = self.runner(worker)
        loader = descendants(runner)
        assert loader, "the job has no data loader processes to freeze"
        signal_all(loader, signal.SIGSTOP)
        wait_until_idle(runner)
        return runner, loader

    def wait_for_log(self, process: subprocess.Popen[bytes], text: str) -> None:
        eventually(lambda: text in self.processes.log(process), f"{text!r} in the log")

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.client.post(f"{API}/jobs", json=spec)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"{API}/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = JOB_TIMEOUT
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            if done(job):
                return job
            assert job["status"] not in FINISHED, f"job {job_id} ended first: {job}"
            return None

        return dict(eventually(reached, f"job {job_id} to get there", timeout))

    def finished(self, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        return self.wait_for(job_id, lambda job: job["status"] in FINISHED, timeout)

    def events(self, job_id: str) -> list[str]:
        return [e["message"] for e in self.client.get(f"{API}/jobs/{job_id}/events").json()]

    def follow(self, job_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The job's events as an EventSource sees them, live until the stream's `end`
        event; and that event's data."""
        deadline = time.monotonic() + JOB_TIMEOUT
        events: list[dict[str, Any]] = []
        kind = "message"
        headers = {"Accept": "text/event-stream"}
        with self.client.stream("GET", f"{API}/jobs/{job_id}/events", headers=headers) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            for line in reply.iter_lines():
                assert time.monotonic() < deadline, f"job {job_id} is still streaming"
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if kind == "end":
                        return events, data
                    events.append(data)
        raise AssertionError(f"the event stream of job {job_id} closed without an end event")

    def checkpoint_steps(self, job_id: str) -> list[int]:
        return [c["step"] for c in self.client.get(f"{API}/jobs/{job_id}/checkpoints").json()]

    def checkpoint_files(self, job_id: str) -> list[int]:
        """The steps of the checkpoint files the job's folder holds, oldest first."""
        folder = self.data_dir / "jobs" / job_id / training.CHECKPOINT_DIR
        return sorted(int(p.stem.removeprefix("step-")) for p in folder.glob("step-*.safetensors"))

    def model(self, job_id: str) -> dict[str, np.ndarray]:
        response = self.client.get(f"{API}/jobs/{job_id}/model")
        assert response.status_code == 200, response.text
        return load(response.content)

    def unacknowledged(self) -> list[str]:
        """The Redis broker's messages that a worker took but has not acknowledged."""
        assert self.redis is not None
        return [m.decode() for m in self.redis.hvals("unacked")]


@pytest.fixture(scope="module")
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    # a module that borrows this fixture without parametrizing it gets the embedded one
    setup: str = getattr(request, "param", EMBEDDED)
    data_dir = tmp_path_factory.mktemp(setup.replace("+", "-"))
    env = {
        **os.environ,
        "DESCENT_DATA_DIR": str(data_dir),
        "DESCENT_API_KEY": TOKEN,
        "DESCENT_LEASE_SECONDS": str(LEASE_SECONDS),
        "DESCENT_REAPER_INTERVAL_SECONDS": "1",
    }
    for name in ("DESCENT_DATABASE_URL", "DESCENT_BROKER_URL", "DESCENT_STOP_GRACE_SECONDS"):
        env.pop(name, None)
    with contextlib.ExitStack() as stack:
        redis_db = None
        if setup == POSTGRES_REDIS:
            database = stack.enter_context(fresh_postgres_database())
            env["DESCENT_DATABASE_URL"] = database.render_as_string(hide_password=False)
            env["DESCENT_BROKER_URL"] = stack.enter_context(fresh_redis_db())
            redis_db = redis.Redis.from_url(env["DESCENT_BROKER_URL"])
            stack.callback(redis_db.close)
        processes = Processes(env, data_dir)
        stack.callback(processes.stop_all)  # before the database and Redis db go
        port = _free_port()
        api = processes.start("serve", "--port", str(port), "--no-worker")
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        stack.callback(client.close)

        def ready() -> bool:
            assert api.poll() is None, f"descent serve exited:\n{processes.log(api)}"
            with contextlib.suppress(httpx.TransportError):
                return client.get("/readyz").status_code == 200
            return False

        eventually(ready, "descent serve to be ready", START_TIMEOUT)
        yield Service(setup, client, processes, data_dir, redis_db)


@pytest.fixture
def worker(service: Service) -> Iterator[subprocess.Popen[bytes]]:
    process = service.worker()
    yield process
    service.processes.stop(process)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The weights resumable_spec ends with when nothing stops it, trained here."""
    result = training.run(
        load_spec(resumable_spec("uninterrupted")),
        job_dir=tmp_path_factory.mktemp("uninterrupted"),
        callbacks=Callbacks(),
        device="cpu",
    )
    assert result.model_path is not None
    return load_file(str(result.model_path))


def assert_same_weights(served: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert served.keys() == expected.keys()
    for name, array in expected.items():
        assert np.array_equal(served[name], array), name


def resumed_step(events: list[str]) -> int:
    resumed = [m for m in events if m.startswith("resumed from step")]
    assert len(resumed) == 1, resumed
    match = re.match(r"resumed from step (\d+)", resumed[0])
    assert match is not None
    return int(match.group(1))


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


# ---------------------------------------------------------------- the core flow


@on_both
def test_a_job_trains_on_a_worker_and_serves_its_model(
    service: Service, worker: subprocess.Popen[bytes]
) -> None:
    job_id = service.submit(digits_spec("happy", max_steps=30, eval_every_steps=10))
    streamed, end = service.follow(job_id)
    assert end == {"status": "succeeded"}
    assert [e["message"] for e in streamed] == service.events(job_id)
    assert any("model saved" in e["message"] for e in streamed)
    job = service.job(job_id)
    assert job["status"] == "succeeded", job
    assert (
        job["attempts"] == 1 and job["progress"]["step"] == 30 and "val_accuracy" in job["metrics"]
    )

    metrics = service.client.get(f"{API}/jobs/{job_id}/metrics").json()
    assert [m["step"] for m in metrics if m["kind"] == "step"] == list(range(1, 31))
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == [10, 20, 30]
    assert service.checkpoint_steps(job_id) == [10, 20, 30]

    # the download loads into the engine and predicts as the worker's model does
    path = service.data_dir / "downloaded.safetensors"
    path.write_bytes(service.client.get(f"{API}/jobs/{job_id}/model").content)
    samples = read("builtin:digits", label_column="label").x[:5]
    response = service.client.post(
        f"{API}/jobs/{job_id}/predict", json={"inputs": samples.tolist()}
    )
    assert response.status_code == 200, response.text
    expected = training.load_trained_model(path).predict(np.asarray(samples))
    assert response.json()["labels"] == expected.tolist()

    # the set-up is the one the test asked for
    broker = "redis://" if service.redis is not None else "filesystem://"
    assert f"Connected to {broker}" in service.processes.log(worker)
    assert (service.data_dir / "descent.db").exists() == (service.setup == EMBEDDED)


@on_both
def test_an_uploaded_data_set_trains_with_loader_processes_once_per_idempotency_key(
    service: Service, worker: subprocess.Popen[bytes]
) -> None:
    digits = read("builtin:digits", label_column="label")
    upload = service.client.post(
        f"{API}/datasets",
        files={"file": ("digits.npz", npz_bytes(digits.x.astype(np.float32), digits.y))},
        data={"name": "digits"},
    )
    assert upload.status_code == 201, upload.text
    assert upload.json()["summary"]["rows"] == 1797
    spec = digits_spec("uploaded", max_steps=20)
    spec["data"] |= {"train": upload.json()["id"], "workers": 2}
    headers = {"Idempotency-Key": f"uploaded-{service.setup}"}
    first = service.client.post(f"{API}/jobs", json=spec, headers=headers)
    again = service.client.post(f"{API}/jobs", json=spec, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    job_id = first.json()["id"]
    assert again.json()["id"] == job_id
    job = service.finished(job_id)
    assert job["status"] == "succeeded" and job["progress"]["step"] == 20, job
    assert job["attempts"] == 1  # the retry queued nothing more
    names = [j["spec"]["name"] for j in service.client.get(f"{API}/jobs").json()["items"]]
    assert names.count("uploaded") == 1


@on_both
def test_requests_are_checked_before_anything_runs(service: Service) -> None:
    url = str(service.client.base_url)
    assert httpx.get(f"{url}{API}/jobs").status_code == 401
    wrong = httpx.get(f"{url}{API}/jobs", headers={"Authorization": "Bearer dsk_not-a-key"})
    assert wrong.status_code == 401

    bad_spec = digits_spec("bad", max_steps=3)
    bad_spec["model"]["layers"][0]["in_features"] = 63
    response = service.client.post(f"{API}/jobs", json=bad_spec)
    assert response.status_code == 422
    assert response.json()["path"] == "model.layers[0]" and "63" in response.json()["detail"]
    bad_upload = service.client.post(
        f"{API}/datasets",
        files={"file": ("broken.npz", b"PK\x03\x04 not really a zip")},
        data={"name": "broken"},
    )
    assert bad_upload.status_code == 422
    assert "malformed .npz" in bad_upload.json()["detail"]

    # another key's job is not found, as if it did not exist
    job_id = service.submit(digits_spec("mine", max_steps=3))
    try:
        key = service.client.post(f"{API}/keys", json={"name": "other"})
        assert key.status_code == 201, key.text
        other = {"Authorization": f"Bearer {key.json()['secret']}"}
        for method, path in (("GET", ""), ("GET", "/events"), ("GET", "/model")):
            response = service.client.request(method, f"{API}/jobs/{job_id}{path}", headers=other)
            assert response.status_code == 404, (path, response.text)
    finally:  # no worker runs here: a later test's worker only drops its message
        service.client.post(f"{API}/jobs/{job_id}/cancel")
    assert service.job(job_id)["status"] == "cancelled"


@pytest.mark.slow
@on_both
def test_the_digits_example_trains_to_its_accuracy(
    service: Service, worker: subprocess.Popen[bytes]
) -> None:
    job_id = service.submit(EXAMPLE)
    job = service.finished(job_id, timeout=300)
    assert job["status"] == "succeeded", job
    assert job["progress"]["epoch"] == 15 and job["metrics"]["val_accuracy"] >= 0.95, job


# ---------------------------------------------------------------- stopping and failing


@on_both_second_slow
def test_cancelling_a_running_job_stops_it_with_a_checkpoint(
    service: Service, worker: subprocess.Popen[bytes]
) -> None:
    job_id = service.submit(digits_spec("cancel", max_steps=100_000))
    service.wait_for(
        job_id, lambda job: job["status"] == "running" and job["progress"]["step"] >= 10
    )
    assert service.client.post(f"{API}/jobs/{job_id}/cancel").status_code == 200
    job = service.finished(job_id)
    assert job["status"] == "cancelled", job
    assert job["progress"]["step"] < 100_000 and job["progress"][
        "step"
    ] in service.checkpoint_steps(job_id)
    assert worker.poll() is None  # the worker lives on for the next job


@on_both_second_slow
def test_a_job_over_its_memory_limit_fails_and_the_worker_takes_the_next(
    service: Service, worker: subprocess.Popen[bytes]
) -> None:
    # the estimate (weights, gradients, optimizer state, activations) fits in the limit,
    # but not with what the Python process itself maps besides
    greedy = digits_spec("greedy", max_steps=30)
    greedy["model"]["layers"][0]["out_features"] = 100_000
    greedy["model"]["layers"][3]["in_features"] = 100_000
    greedy["resources"] = {"memory_limit_mb": 300}
    greedy_id = service.submit(greedy)
    next_id = service.submit(digits_spec("next", max_steps=20))
    job = service.finished(greedy_id)
    assert job["status"] == "failed" and "memory" in job["error"], job
    assert service.finished(next_id)["status"] == "succeeded"
    assert worker.poll() is None


# ---------------------------------------------------------------- a worker goes away


@on_both
def test_a_sigkilled_workers_job_resumes_on_another_worker(
    service: Service, uninterrupted: dict[str, np.ndarray]
) -> None:
    first = service.worker()
    job_id = service.submit(resumable_spec("killed"))
    service.wait_for(job_id, lambda job: bool(service.checkpoint_steps(job_id)))
    runner, _ = service.freeze_loader(first)
    k = service.checkpoint_files(job_id)[-1]
    first.kill()  # SIGKILL after checkpoint k, before k+1: no warm shutdown
    first.wait()
    eventually(lambda: not alive(runner), "the runner to die with its worker")
    service.processes.stop(first)  # and the frozen loader processes with it
    if service.redis is not None:  # acks_late: the dead worker's message is not lost
        assert any(job_id in message for message in service.unacknowledged())

    # the lease expires, the reaper publishes the job again, a new worker claims it
    second = service.worker()
    try:
        job = service.finished(job_id)
    finally:
        service.processes.stop(second)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2 and job["progress"]["step"] == RESUMABLE_STEPS
    assert resumed_step(service.events(job_id)) == k
    metrics = service.client.get(f"{API}/jobs/{job_id}/metrics").json()
    steps = [m["step"] for m in metrics if m["kind"] == "step"]
    assert steps == list(range(1, RESUMABLE_STEPS + 1)), "each step is reported once"
    # and it ends where an uninterrupted run ends: the same weights, bit for bit
    assert_same_weights(service.model(job_id), uninterrupted)


@pytest.mark.slow
@on_both
def test_a_stopping_worker_checkpoints_and_hands_its_job_to_the_next(
    service: Service, uninterrupted: dict[str, np.ndarray]
) -> None:
    first = service.worker()
    job_id = service.submit(resumable_spec("handed-back"))
    service.wait_for(job_id, lambda job: bool(service.checkpoint_steps(job_id)))
    _, loader = service.freeze_loader(first)  # hold the job between two steps ...
    first.send_signal(signal.SIGTERM)  # a warm shutdown
    service.wait_for_log(first, f"job {job_id}: the worker is shutting down")
    signal_all(loader, signal.SIGCONT)  # ... until the stop request has reached it
    assert first.wait(timeout=30) == 0
    assert f"job {job_id}: handed back for another worker" in service.processes.log(first)
    job = service.job(job_id)
    assert job["status"] == "queued" and job["attempts"] == 0, job  # not a failed attempt
    stopped_at = job["progress"]["step"]
    assert 0 < stopped_at < RESUMABLE_STEPS and stopped_at in service.checkpoint_steps(job_id)
    assert f"handed back at step {stopped_at}: the worker is shutting down" in service.events(
        job_id
    )

    second = service.worker()
    try:
        job = service.finished(job_id)
    finally:
        service.processes.stop(second)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert resumed_step(service.events(job_id)) == stopped_at
    assert_same_weights(service.model(job_id), uninterrupted)


@pytest.mark.slow
@on_both
def test_a_child_that_ignores_the_stop_is_killed_after_the_grace_and_its_job_handed_on(
    service: Service, uninterrupted: dict[str, np.ndarray]
) -> None:
    first = service.worker(DESCENT_STOP_GRACE_SECONDS="1")
    job_id = service.submit(resumable_spec("stuck"))
    service.wait_for(job_id, lambda job: bool(service.checkpoint_steps(job_id)))
    runner, _ = service.freeze_loader(first)  # stuck in data loading for good
    k = service.checkpoint_files(job_id)[-1]
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    log = service.processes.log(first)
    assert f"job {job_id}: its child ignored SIGTERM; killing it" in log
    assert f"job {job_id}: handed back for another worker" in log
    assert not alive(runner)
    service.processes.stop(first)  # the frozen loader processes
    job = service.job(job_id)
    assert job["status"] == "queued" and job["attempts"] == 0, job

    second = service.worker()
    try:
        job = service.finished(job_id)
    finally:
        service.processes.stop(second)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert resumed_step(service.events(job_id)) == k  # its newest checkpoint
    assert_same_weights(service.model(job_id), uninterrupted)


def test_the_redis_broker_keeps_a_running_jobs_message_past_any_lease(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """acks_late with reject_on_worker_lost, and a visibility timeout longer than a lease,
    so Redis never hands a running job's message to a second worker meanwhile."""
    # imported here: the module configures its app from the environment, and the embedded
    # default makes its broker folder in the data dir (this test's, not ./descent-data)
    monkeypatch.setenv("DESCENT_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        from workers.celery_app import broker_options, make_app
        from workers.tasks import run_job
    finally:
        get_settings.cache_clear()
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", lease_seconds=600)
    url, options = broker_options(settings)
    assert url == settings.broker_url
    assert options["visibility_timeout"] >= max(3600, 10 * settings.lease_seconds)
    conf = make_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.broker_transport_options == options
    assert run_job.acks_late and run_job.reject_on_worker_lost
