"""`descent serve --api-workers 2`: the API in two processes on one port, each a real
process, observed as a client and a scraper see them. Each test freezes one of them
(SIGSTOP) to be sure which one answers: a process that is stopped accepts no connection,
so every answer then comes from the other.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_workers import (
    API,
    EXAMPLE,
    START_TIMEOUT,
    TOKEN,
    Processes,
    _free_port,
    alive,
    children,
    descendants,
    eventually,
)

API_PROCESSES = 2
REQUESTS = 5  # a process may stay frozen well under uvicorn's 5 s health-check timeout
STOP_TIMEOUT = 20.0


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    processes: Processes

    def get(self, path: str) -> httpx.Response:
        """A request on a new connection: a kept-alive one would stay with one process."""
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            return client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})

    def api_processes(self) -> list[int]:
        """uvicorn's API processes: serve's children started by multiprocessing's spawn
        (not its resource tracker, nor a `descent worker`)."""

        def spawned(pid: int) -> bool:
            with contextlib.suppress(FileNotFoundError):
                return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            return False

        return [pid for pid in children(self.process.pid) if spawned(pid)]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    env = {**os.environ, "DESCENT_DATA_DIR": str(tmp_path), "DESCENT_API_KEY": TOKEN}
    for name in ("DESCENT_DATABASE_URL", "DESCENT_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    processes = Processes(env, tmp_path)
    port = _free_port()
    args = ("--port", str(port), "--no-worker", "--api-workers", str(API_PROCESSES))
    process = processes.start("serve", *args)
    service = Served(process, f"http://127.0.0.1:{port}", processes)
    try:

        def ready() -> bool:
            assert process.poll() is None, f"descent serve exited:\n{processes.log(process)}"
            with contextlib.suppress(httpx.TransportError):
                return service.get("/readyz").status_code == 200
            return False

        eventually(ready, "descent serve to be ready", START_TIMEOUT)
        eventually(
            lambda: len(service.api_processes()) == API_PROCESSES,
            f"{API_PROCESSES} API processes",
            START_TIMEOUT,
        )
        yield service
    finally:
        processes.stop_all()


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def sample(metrics: str, name: str, labels: str = "") -> list[float]:
    """Every value of the series `name{labels}` in Prometheus text."""
    line = re.compile(rf"^{re.escape(name + labels)} (\S+)$", re.MULTILINE)
    return [float(value) for value in line.findall(metrics)]


def test_every_api_process_answers_with_the_key_and_metrics_counts_them_all(
    served: Served,
) -> None:
    first, second = served.api_processes()
    for stopped in (first, second):
        with frozen(stopped):
            # DESCENT_API_KEY, made the first key by whichever process started first,
            # is taken by each
            assert [served.get(f"{API}/jobs").status_code for _ in range(REQUESTS)] == [
                200
            ] * REQUESTS
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        created = client.post(
            f"{API}/jobs", json=EXAMPLE, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert created.status_code == 201, created.text

    metrics = served.get("/metrics").text
    route = '{method="GET",route="/api/v1/jobs",status="200"}'
    assert sample(metrics, "descent_http_requests_total", route) == [2 * REQUESTS]
    assert sample(metrics, "descent_jobs_created_total") == [1]
    # read from the store once a scrape: one series a status, not one a process
    assert sample(metrics, "descent_jobs", '{status="queued"}') == [1]
    assert sample(metrics, "descent_jobs", '{status="running"}') == [0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_serve_stops_all_its_processes(served: Served, signum: signal.Signals) -> None:
    started = descendants(served.process.pid)
    assert len(served.api_processes()) == API_PROCESSES
    served.process.send_signal(signum)
    assert served.process.wait(timeout=STOP_TIMEOUT) == 0, served.processes.log(served.process)
    eventually(
        lambda: not [pid for pid in started if alive(pid)],
        "every process serve started to end",
        STOP_TIMEOUT,
    )
