"""The worker's GPU pool: the GPUs `descent worker --gpus` gave it, lent to one job each.

A worker owns a set of GPU ids, numbered as the worker sees them (its own
CUDA_VISIBLE_DEVICES, if any, narrows and renumbers them, as CUDA does). `descent worker`
validates them and hands them to the worker process in DESCENT_WORKER_GPUS, the one
place the task reads them from. Before claiming a job, its task takes the GPUs the job
needs from the pool (waiting while other jobs hold them) and starts the job's child with
CUDA_VISIBLE_DEVICES naming exactly those: the engine's cuda:0 there is the GPU it was
given, and a job that needs none sees no GPU at all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import engine
from jobs.spec import ResourcesSpec

WORKER_GPUS_ENV = "DESCENT_WORKER_GPUS"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


class NotEnoughGpus(ValueError):
    """A job needs more GPUs than the worker owns: waiting would never end."""


def parse_gpu_ids(listed: str) -> tuple[int, ...]:
    """'0,1' as (0, 1); an empty list means none. ValueError naming the bad entry."""
    if not listed.strip():
        return ()
    ids: list[int] = []
    for entry in (e.strip() for e in listed.split(",")):
        if not entry.isdecimal():
            raise ValueError(f"{entry!r} is not a GPU id (a non-negative integer, e.g. 0,1)")
        gpu = int(entry)
        if gpu in ids:
            raise ValueError(f"GPU {gpu} is listed twice")
        ids.append(gpu)
    return tuple(ids)


def _worker_visible() -> list[str] | None:
    """The worker's own CUDA_VISIBLE_DEVICES entries, or None when it has none."""
    value = os.environ.get(CUDA_VISIBLE_DEVICES)
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def owned_gpus(listed: str | None) -> tuple[int, ...]:
    """The GPUs a worker owns: the ids `listed` ("0,1"), else every GPU the engine sees.
    ValueError for a bad list, or an id past what the worker's CUDA_VISIBLE_DEVICES shows."""
    if listed is None:
        return tuple(range(engine.cuda.device_count()))
    ids = parse_gpu_ids(listed)
    visible = _worker_visible()
    if visible is not None:
        for gpu in ids:
            if gpu >= len(visible):
                raise ValueError(
                    f"GPU {gpu}: {CUDA_VISIBLE_DEVICES}={os.environ[CUDA_VISIBLE_DEVICES]!r} "
                    f"shows this worker {len(visible)} GPUs, numbered from 0"
                )
    return ids


def worker_arguments(workers: int, gpus: Sequence[int]) -> list[list[str]]:
    """`descent worker` arguments for `workers` processes sharing `gpus`: each GPU goes to
    exactly one process (round robin), a process with GPUs takes the gpu queue too, so
    that `descent serve` on a GPU machine runs device jobs without two of them ever
    being lent the same GPU."""
    commands = []
    for i in range(workers):
        mine = gpus[i::workers]
        if mine:
            commands.append(["--queues", "cpu,gpu", "--gpus", ",".join(map(str, mine))])
        else:
            commands.append(["--queues", "cpu", "--gpus", ""])
    return commands


def cuda_visible_devices(gpus: Sequence[int]) -> str:
    """The child's CUDA_VISIBLE_DEVICES for the worker's `gpus`. The child's variable
    replaces the worker's rather than narrowing it, so ids go through the worker's own
    list when it has one; "" (no GPU) for a job that needs none."""
    visible = _worker_visible()
    return ",".join(str(gpu) if visible is None else visible[gpu] for gpu in gpus)


def gpus_needed(resources: dict[str, Any]) -> int:
    """A job's GPUs from its spec's resources: `gpus`, or one for device "cuda"."""
    spec = ResourcesSpec.model_validate(resources)
    if spec.gpus:
        return spec.gpus
    return 1 if spec.device == "cuda" else 0


class GpuPool:
    """GPU ids lent to jobs, each to one job at a time; safe across the worker's threads."""

    def __init__(self, gpus: Sequence[int]) -> None:
        self.gpus = tuple(gpus)
        self._free = set(self.gpus)
        self._changed = threading.Condition()

    @contextmanager
    def lease(self, count: int) -> Iterator[tuple[int, ...]]:
        """`count` GPUs, lowest ids first, held until the block ends (however it ends);
        waits while other holders have them. NotEnoughGpus if the pool never could."""
        if count > len(self.gpus):
            raise NotEnoughGpus(
                f"the job needs {count} GPUs but this worker owns {len(self.gpus)} "
                f"(descent worker --gpus)"
            )
        with self._changed:
            self._changed.wait_for(lambda: len(self._free) >= count)
            taken = tuple(sorted(self._free)[:count])
            self._free.difference_update(taken)
        try:
            yield taken
        finally:
            with self._changed:
                self._free.update(taken)
                self._changed.notify_all()


@cache
def worker_pool() -> GpuPool:
    """This worker process's pool, from DESCENT_WORKER_GPUS (`descent worker` sets it)."""
    return GpuPool(owned_gpus(os.environ.get(WORKER_GPUS_ENV)))
