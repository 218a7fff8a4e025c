"""GPU routing: a job's resources send it to the gpu queue, and a GPU worker lends each
job the GPUs it owns, one job a GPU. The pool with threads; then `descent worker --gpus`
as real processes beside `descent serve --no-worker` (this machine need not have a GPU:
a job with device "auto" trains on the CPU where CuPy sees none, and the GPU it was
given shows in its events and in its process's CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import test_workers
from test_workers import ROOT, Service, digits_spec
from typer.testing import CliRunner

from descent.cli import app
from workers.gpus import (
    CUDA_VISIBLE_DEVICES,
    WORKER_GPUS_ENV,
    GpuPool,
    NotEnoughGpus,
    cuda_visible_devices,
    gpus_needed,
    owned_gpus,
    parse_gpu_ids,
    worker_arguments,
)

# the worker tests' service (API and reaper on a fresh data dir), one for this module
service = test_workers.service
WAIT_SECONDS = 10.0


class Holder(threading.Thread):
    """Leases `count` GPUs from `pool` and holds them until `release` is set."""

    def __init__(self, pool: GpuPool, count: int) -> None:
        super().__init__(daemon=True)
        self.pool = pool
        self.count = count
        self.got = threading.Event()
        self.release = threading.Event()
        self.gpus: tuple[int, ...] = ()

    def run(self) -> None:
        with self.pool.lease(self.count) as gpus:
            self.gpus = gpus
            self.got.set()
            self.release.wait()


def hold(pool: GpuPool, count: int) -> Holder:
    holder = Holder(pool, count)
    holder.start()
    return holder


def let_go(*holders: Holder) -> None:
    for holder in holders:
        holder.release.set()
        holder.join(WAIT_SECONDS)


# ---------------------------------------------------------------- the pool


def test_concurrent_holders_get_distinct_gpus() -> None:
    pool = GpuPool([0, 1, 2, 3])
    holders = [hold(pool, count) for count in (1, 2, 1)]
    assert all(holder.got.wait(WAIT_SECONDS) for holder in holders)
    taken = [gpu for holder in holders for gpu in holder.gpus]
    assert sorted(taken) == [0, 1, 2, 3]
    assert [len(holder.gpus) for holder in holders] == [1, 2, 1]
    let_go(*holders)


def test_a_lease_waits_until_its_gpus_are_free() -> None:
    pool = GpuPool([7, 9])
    first = hold(pool, 1)
    assert first.got.wait(WAIT_SECONDS) and first.gpus == (7,)
    both = hold(pool, 2)
    assert not both.got.wait(0.3)  # one of the two is taken
    let_go(first)
    assert both.got.wait(WAIT_SECONDS) and both.gpus == (7, 9)
    let_go(both)


def test_the_gpus_come_back_when_their_holder_raises() -> None:
    pool = GpuPool([4, 6])
    with pytest.raises(RuntimeError), pool.lease(2) as gpus:
        assert gpus == (4, 6)
        raise RuntimeError("the claim failed")
    again = hold(pool, 2)
    assert again.got.wait(WAIT_SECONDS) and again.gpus == (4, 6)
    let_go(again)


def test_a_job_that_needs_no_gpu_never_waits() -> None:
    pool = GpuPool([0])
    busy = hold(pool, 1)
    assert busy.got.wait(WAIT_SECONDS)
    with pool.lease(0) as gpus:
        assert gpus == ()
    let_go(busy)


def test_a_need_past_what_the_worker_owns_fails_naming_both() -> None:
    pool = GpuPool([0])
    with pytest.raises(NotEnoughGpus, match="needs 2 GPUs but this worker owns 1"), pool.lease(2):
        pass


# ---------------------------------------------------------------- needs and ids


@pytest.mark.parametrize(
    ("resources", "need"),
    [
        ({}, 0),
        ({"device": "cpu"}, 0),
        ({"device": "auto"}, 0),
        ({"device": "cuda"}, 1),
        ({"device": "auto", "gpus": 1}, 1),
        ({"device": "cuda", "gpus": 1}, 1),
    ],
)
def test_a_jobs_need_comes_from_its_resources(resources: dict[str, Any], need: int) -> None:
    assert gpus_needed(resources) == need


@pytest.mark.parametrize(
    ("listed", "ids"), [("0,1", (0, 1)), (" 5 , 3", (5, 3)), ("", ()), ("2", (2,))]
)
def test_gpu_ids_parse(listed: str, ids: tuple[int, ...]) -> None:
    assert parse_gpu_ids(listed) == ids


def test_a_child_sees_its_gpus_through_the_workers_own_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CUDA_VISIBLE_DEVICES, raising=False)
    assert cuda_visible_devices((3,)) == "3"
    assert cuda_visible_devices(()) == ""
    # CUDA renumbers what CUDA_VISIBLE_DEVICES shows from 0; the child's variable replaces
    # the worker's, so it must name the devices the worker's ids stand for
    monkeypatch.setenv(CUDA_VISIBLE_DEVICES, "2,GPU-ab12")
    assert cuda_visible_devices((1,)) == "GPU-ab12"
    assert cuda_visible_devices((0, 1)) == "2,GPU-ab12"
    assert owned_gpus("1") == (1,)
    with pytest.raises(ValueError, match="shows this worker 2 GPUs"):
        owned_gpus("0,2")


@pytest.mark.parametrize(
    ("gpus", "reason"),
    [
        ("1,1", "GPU 1 is listed twice"),
        ("-1", "'-1' is not a GPU id"),
        ("0,x", "'x' is not a GPU id"),
        ("0,,1", "'' is not a GPU id"),
    ],
)
def test_the_worker_refuses_bad_gpu_ids(
    gpus: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CUDA_VISIBLE_DEVICES, raising=False)
    result = CliRunner().invoke(app, ["worker", f"--gpus={gpus}"])
    assert result.exit_code == 2
    assert "--gpus" in result.output and reason in _words(result.output)
    assert WORKER_GPUS_ENV not in os.environ  # refused before the worker was configured


def _words(output: str) -> str:
    """Rich's error box, as plain words: its borders and line wraps dropped."""
    return " ".join(output.replace("│", " ").split())


def test_a_gpu_worker_with_no_gpus_is_refused_at_start() -> None:
    env = {**os.environ, CUDA_VISIBLE_DEVICES: ""}  # no GPU, even on a machine with some
    env.pop(WORKER_GPUS_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "descent", "worker", "--queues", "cpu,gpu"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "a worker of the gpu queue needs GPUs, and the engine sees none here" in _words(
        result.stderr
    )


# ---------------------------------------------------------------- the service


class Children:
    """Watches a worker's training children through /proc: each one's
    CUDA_VISIBLE_DEVICES, and how many ran at once."""

    def __init__(self, worker: subprocess.Popen[bytes]) -> None:
        self.parent = worker.pid
        self.visible: dict[int, str | None] = {}
        self.most_at_once = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(WAIT_SECONDS)

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            running = self._runners()
            self.most_at_once = max(self.most_at_once, len(running))
            for pid in running:
                if pid not in self.visible:
                    self.visible[pid] = _environ(pid).get(CUDA_VISIBLE_DEVICES)

    def _runners(self) -> list[int]:
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue  # it ended while we looked
            if ppid == self.parent and b"workers.runner" in command:
                found.append(int(entry.name))
        return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode() for key, value in pairs}


def _assigned(service: Service, job_id: str) -> str:
    """The GPUs the job's event names, or "CPU"."""
    for message in service.events(job_id):
        match = re.match(r"running on (?:GPUs? (\S+)|the (CPU)) of ", message)
        if match:
            return match.group(1) or match.group(2)
    raise AssertionError(f"job {job_id} has no assignment event: {service.events(job_id)}")


def test_a_gpu_worker_gives_each_job_its_own_gpus(service: Service) -> None:
    for name in (CUDA_VISIBLE_DEVICES, WORKER_GPUS_ENV):  # the ids below, as given
        service.processes.env.pop(name, None)
    cpu_job = service.submit(digits_spec("on-cpu", max_steps=20))
    gpu_jobs = []
    for name in ("gpu-a", "gpu-b"):
        spec = digits_spec(name, max_steps=60)
        spec["resources"] = {"device": "auto", "gpus": 1}
        gpu_jobs.append(service.submit(spec))
    assert [service.job(j)["queue"] for j in (cpu_job, *gpu_jobs)] == ["cpu", "gpu", "gpu"]

    gpu_worker = service.processes.start(
        "worker", "--queues", "gpu", "--gpus", "3,5", "--concurrency", "2"
    )
    children = Children(gpu_worker)
    try:
        finished = [service.finished(job_id) for job_id in gpu_jobs]
    finally:
        children.stop()
        service.processes.stop(gpu_worker)
    assert all(job["status"] == "succeeded" for job in finished), finished
    assert sorted(_assigned(service, job_id) for job_id in gpu_jobs) == ["3", "5"]
    # both at once, each child seeing exactly the GPU it was given
    assert children.most_at_once == 2
    assert sorted(children.visible.values()) == ["3", "5"]
    # the gpu worker never took the cpu job
    job = service.job(cpu_job)
    assert job["status"] == "queued" and job["attempts"] == 0, job

    cpu_worker = service.processes.start("worker")
    children = Children(cpu_worker)
    try:
        job = service.finished(cpu_job)
    finally:
        children.stop()
        service.processes.stop(cpu_worker)
    assert job["status"] == "succeeded", job
    assert _assigned(service, cpu_job) == "CPU"
    assert list(children.visible.values()) == [""]  # no GPU to touch


def test_serve_splits_its_gpus_over_its_workers_one_owner_each() -> None:
    assert worker_arguments(2, (0, 1, 2)) == [
        ["--queues", "cpu,gpu", "--gpus", "0,2"],
        ["--queues", "cpu,gpu", "--gpus", "1"],
    ]
    # more workers than GPUs: the rest take CPU jobs only, and own no GPU
    assert worker_arguments(3, (0,)) == [
        ["--queues", "cpu,gpu", "--gpus", "0"],
        ["--queues", "cpu", "--gpus", ""],
        ["--queues", "cpu", "--gpus", ""],
    ]
    assert worker_arguments(1, ()) == [["--queues", "cpu", "--gpus", ""]]
    assert worker_arguments(0, (0, 1)) == []
