"""The service as it runs: `descent serve --no-worker` (the API and the reaper) and
`descent worker` processes on the embedded broker, each a real process, with a fresh
SQLite data dir; everything observed through HTTP, as a client sees it."""

from __future__ import annotations

import contextlib
import copy
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
from safetensors.numpy import load, load_file

from jobs import training
from jobs.callbacks import Callbacks
from jobs.datasets.readers import read
from jobs.spec import load_spec

API = "/api/v1"
TOKEN = "workers-" + "k" * 40
ROOT = Path(__file__).parent.parent
EXAMPLE = json.loads((ROOT / "examples" / "digits-mlp.json").read_text())
LEASE_SECONDS = 8  # heartbeats every lease/3 s: room for a loaded 2-core CI machine
START_TIMEOUT = 30.0
JOB_TIMEOUT = 60.0


def digits_spec(name: str, **training_options: Any) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE)
    spec["name"] = name
    spec["training"] = {"seed": 0, "checkpoint_every_steps": 10, **training_options}
    return spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Starts `python -m descent ...` processes, each in its own session, and kills
    every one it started (with any child it left) on the way out."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{args[0]}-{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "descent", *args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, for the clean-up below
        )
        self.started.append(process)
        return process

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


class Service:
    def __init__(self, client: httpx.Client, processes: Processes, data_dir: Path) -> None:
        self.client = client
        self.processes = processes
        self.data_dir = data_dir

    def worker(self) -> subprocess.Popen[bytes]:
        return self.processes.start("worker")

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if done(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never got there; last seen {job}")

    def finished(self, job_id: str) -> dict[str, Any]:
        return self.wait_for(
            job_id, lambda job: job["status"] in {"succeeded", "failed", "cancelled"}
        )

    def events(self, job_id: str) -> list[str]:
        return [e["message"] for e in self.client.get(f"{API}/jobs/{job_id}/events").json()]

    def checkpoint_steps(self, job_id: str) -> list[int]:
        return [c["step"] for c in self.client.get(f"{API}/jobs/{job_id}/checkpoints").json()]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("service")
    env = {
        **os.environ,
        "DESCENT_DATA_DIR": str(data_dir),
        "DESCENT_API_KEY": TOKEN,
        "DESCENT_LEASE_SECONDS": str(LEASE_SECONDS),
        "DESCENT_REAPER_INTERVAL_SECONDS": "1",
    }
    for name in ("DESCENT_DATABASE_URL", "DESCENT_BROKER_URL"):
        env.pop(name, None)
    processes = Processes(env, data_dir)
    port = _free_port()
    try:
        api = processes.start("serve", "--port", str(port), "--no-worker")
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert api.poll() is None, "descent serve exited; see its log in the data dir"
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "descent serve did not become ready"
            time.sleep(0.2)
        yield Service(client, processes, data_dir)
        client.close()
    finally:
        processes.stop_all()


@pytest.fixture
def worker(service: Service) -> Iterator[subprocess.Popen[bytes]]:
    process = service.worker()
    yield process
    service.processes.stop(process)


def test_a_job_trains_on_a_worker_and_serves_its_model(
    service: Service, worker: subprocess.Popen[bytes]
) -> None:
    job_id = service.submit(digits_spec("happy", max_steps=30, eval_every_steps=10))
    job = service.finished(job_id)
    assert job["status"] == "succeeded", job
    assert (
        job["attempts"] == 1 and job["progress"]["step"] == 30 and "val_accuracy" in job["metrics"]
    )

    metrics = service.client.get(f"{API}/jobs/{job_id}/metrics").json()
    assert [m["step"] for m in metrics if m["kind"] == "step"] == list(range(1, 31))
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == [10, 20, 30]
    assert service.checkpoint_steps(job_id) == [10, 20, 30]
    assert any("model saved" in message for message in service.events(job_id))

    model = service.client.get(f"{API}/jobs/{job_id}/model")
    assert model.status_code == 200
    path = service.data_dir / "downloaded.safetensors"
    path.write_bytes(model.content)
    samples = read("builtin:digits", label_column="label").x[:5]
    response = service.client.post(
        f"{API}/jobs/{job_id}/predict", json={"inputs": samples.tolist()}
    )
    assert response.status_code == 200, response.text
    expected = training.load_trained_model(path).predict(np.asarray(samples))
    assert response.json()["labels"] == expected.tolist()


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


def test_a_sigkilled_workers_job_resumes_on_another_worker(service: Service) -> None:
    spec = digits_spec("killed", max_steps=200, eval_every_steps=50)
    first = service.worker()
    job_id = service.submit(spec)
    service.wait_for(job_id, lambda job: bool(service.checkpoint_steps(job_id)))
    first.kill()  # SIGKILL: no warm shutdown; its runner child notices and exits
    first.wait()
    killed_at = service.job(job_id)["progress"]["step"]
    assert killed_at < 200

    # the lease expires, the reaper publishes the job again, a new worker claims it
    second = service.worker()
    try:
        job = service.finished(job_id)
    finally:
        service.processes.stop(second)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2 and job["progress"]["step"] == 200
    resumed = [m for m in service.events(job_id) if m.startswith("resumed from step")]
    assert len(resumed) == 1, resumed
    match = re.match(r"resumed from step (\d+)", resumed[0])
    assert match is not None
    step = int(match.group(1))
    assert step >= 10 and step in service.checkpoint_steps(job_id)

    # and it ends where an uninterrupted run ends: the same weights, bit for bit
    alone = training.run(
        load_spec(spec), job_dir=service.data_dir / "alone", callbacks=Callbacks(), device="cpu"
    )
    assert alone.model_path is not None
    served = load(service.client.get(f"{API}/jobs/{job_id}/model").content)
    expected = load_file(str(alone.model_path))
    assert served.keys() == expected.keys()
    for name, array in expected.items():
        assert np.array_equal(served[name], array), name


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
