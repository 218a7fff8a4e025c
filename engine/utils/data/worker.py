"""DataLoader workers: what runs in them, and the two pools that host them.

A worker holds its own copy of the dataset and a fetcher. It receives tasks `(generation,
batch index, indices or batch size)` and answers `(worker id, generation, batch index,
kind, payload, rng state)`, kind being "data", "error" (the formatted traceback) or "end"
(an iterable dataset ran out). The generation changes each epoch, so a persistent worker
restarts its iterable stream and the loader drops answers to an abandoned epoch.

Seeding follows PyTorch: worker `i` gets seed `base_seed + i`, the loader drawing
`base_seed` once per set of workers. A worker process seeds the engine's default generator,
`random` and NumPy's global generator with it, so random transforms in `__getitem__` are
reproducible. Worker threads share the process's globals, so a thread worker gets a
private `engine.Generator` in `get_worker_info().rng` instead (as PyTorch's thread workers
do); transforms that should be reproducible under threads draw from it. Each answer
carries the worker's generator state after the batch, which lets a resumed loader start
fresh workers where the interrupted ones were.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import random
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from multiprocessing import connection
from multiprocessing.context import BaseContext
from typing import Any

import numpy as np

from engine import random as engine_random
from engine.random import Generator

POLL_S = 0.5  # how long a blocked wait sleeps before checking for a dead parent or worker
_SHUTDOWN_S = 5.0  # how long workers get to exit cleanly before they are terminated


@dataclass(frozen=True)
class WorkerInfo:
    """What `get_worker_info()` returns inside a worker (None outside one)."""

    id: int
    num_workers: int
    seed: int
    dataset: Any
    rng: Generator | None = None
    worker_method: str = "multiprocessing"


_worker_info: WorkerInfo | None = None  # set in a worker process
_thread_local = threading.local()  # set in a worker thread


def get_worker_info() -> WorkerInfo | None:
    """This worker's id, the number of workers, its seed and its copy of the dataset.

    An iterable dataset uses it to give each worker a different share of the stream.
    """
    info = getattr(_thread_local, "info", None)
    return info if info is not None else _worker_info


class Fetcher:
    """Turns a task's argument into a batch: indices for a map-style dataset, a batch size
    (None: one sample, no batching) for an iterable one."""

    def __init__(
        self,
        dataset: Any,
        iterable: bool,
        auto_collation: bool,
        collate_fn: Callable[[Any], Any],
        drop_last: bool,
    ) -> None:
        self.dataset = dataset
        self.iterable = iterable
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self._it: Any = None
        self._ended = False

    def reset(self) -> None:
        self._it = iter(self.dataset) if self.iterable else None
        self._ended = False

    def fetch(self, arg: Any) -> Any:
        """One batch; StopIteration when an iterable dataset has no (full) batch left."""
        if not self.iterable:
            if not self.auto_collation:
                return self.collate_fn(self.dataset[arg])
            getitems = getattr(self.dataset, "__getitems__", None)
            samples = getitems(arg) if callable(getitems) else [self.dataset[i] for i in arg]
            return self.collate_fn(samples)
        if self._it is None:
            self.reset()
        if self._ended:
            raise StopIteration
        if not self.auto_collation:
            return self.collate_fn(next(self._it))
        samples = list(islice(self._it, arg))
        if len(samples) < arg:
            self._ended = True
        if not samples or (self.drop_last and len(samples) < arg):
            raise StopIteration
        return self.collate_fn(samples)


def format_error(worker_id: int, method: str) -> tuple[type[BaseException], str]:
    """The exception being handled, as its type and PyTorch's message with the traceback."""
    exc_type = sys.exc_info()[0] or RuntimeError
    where = "process" if method == "multiprocessing" else "thread"
    return (
        exc_type,
        f"Caught {exc_type.__name__} in DataLoader worker {where} {worker_id}.\n"
        f"Original {traceback.format_exc()}",
    )


def reraise(exc_type: type[BaseException], msg: str) -> None:
    """Raise the worker's exception type with its traceback text, as PyTorch does."""
    if exc_type is KeyError:  # KeyError repr()s its message: keep the text readable
        msg = KeyError.__name__ + "(" + repr(msg) + ")"
        exc_type = RuntimeError
    try:
        err = exc_type(msg)
    except Exception:  # an exception type that wants other arguments
        err = RuntimeError(msg)
    try:
        raise err
    finally:
        # `err` in this frame, which err's traceback holds, would make a reference cycle that
        # keeps the iterator (and so its worker processes) alive until the next gc run
        del err


@dataclass
class WorkerSpec:
    """Everything a worker needs, the same for every worker but `worker_id`/`rng_state`."""

    dataset: Any
    iterable: bool
    auto_collation: bool
    collate_fn: Callable[[Any], Any]
    drop_last: bool
    base_seed: int
    num_workers: int
    init_fn: Callable[[int], None] | None
    method: str


def _openblas_libs() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries loaded in this process (NumPy's wheels bundle one)."""
    try:
        with open("/proc/self/maps") as f:  # Linux; elsewhere BLAS threads are left alone
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return []
    return [ctypes.CDLL(p) for p in sorted(paths) if os.path.exists(p)]


def _one_blas_thread(method: str) -> None:
    """Limit BLAS to one thread in a worker, as PyTorch's workers call set_num_threads(1).

    Measured (benchmarks/dataloader.py): two forked workers each running a matmul on
    OpenBLAS's default threads over-subscribed 2 cores: 4.4 s for an epoch of NumPy work
    that took 0.26-0.43 s with one BLAS thread per worker. A process limits its whole
    BLAS; a thread only itself, through OpenBLAS's per-thread setting where there is one.
    """
    names = (
        ("openblas_set_num_threads_local",)
        if method == "thread"
        else (
            "openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
        )
    )
    for lib in _openblas_libs():
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(1))
                break


def _run(
    spec: WorkerSpec,
    worker_id: int,
    rng_state: list[int] | None,
    get_task: Callable[[], Any],
    put: Callable[[Any], None],
) -> None:
    """The worker loop, for both pools. get_task returns a task, None to stop, or
    `_IDLE` after waiting POLL_S with nothing to do (then the loop checks its parent)."""
    global _worker_info
    seed = spec.base_seed + worker_id
    rng: Generator
    if spec.method == "thread":
        rng = Generator().manual_seed(seed)
        _thread_local.info = WorkerInfo(
            worker_id, spec.num_workers, seed, spec.dataset, rng, "thread"
        )
    else:
        rng = engine_random.default_generator
        engine_random.manual_seed(seed)
        random.seed(seed)
        np.random.seed(np.random.SeedSequence([spec.base_seed, worker_id]).generate_state(4))
        _worker_info = WorkerInfo(worker_id, spec.num_workers, seed, spec.dataset)
    _one_blas_thread(spec.method)
    init_error = None
    fetcher = Fetcher(
        spec.dataset, spec.iterable, spec.auto_collation, spec.collate_fn, spec.drop_last
    )
    try:
        if spec.init_fn is not None:
            spec.init_fn(worker_id)
    except Exception:
        init_error = format_error(worker_id, spec.method)
    if rng_state is not None:
        rng.set_state(rng_state)
    generation = None
    ended = False
    while True:
        task = get_task()
        if task is _IDLE:
            continue
        if task is None:
            return
        gen, idx, arg = task
        if gen != generation:
            generation, ended = gen, False
            fetcher.reset()
        if ended:  # an iterable worker that ran out ignores the rest of the epoch's tasks
            continue
        if init_error is not None:
            kind, payload, init_error = "error", init_error, None
        else:
            try:
                kind, payload = "data", fetcher.fetch(arg)
            except StopIteration:
                kind, payload, ended = "end", None, True
            except Exception:
                kind, payload = "error", format_error(worker_id, spec.method)
        put((worker_id, gen, idx, kind, payload, rng.get_state().tolist()))
        del payload


_IDLE = object()


def _process_main(
    spec: WorkerSpec,
    worker_id: int,
    rng_state: list[int] | None,
    tasks: connection.Connection,
    results: connection.Connection,
) -> None:
    parent = multiprocessing.parent_process()
    assert parent is not None  # a DataLoader worker process always has its loader

    def get_task() -> Any:
        if tasks.poll(POLL_S):
            return tasks.recv()
        # the loader's process died; not os.getppid(), which under forkserver is the server
        return None if not parent.is_alive() else _IDLE

    def put(msg: Any) -> None:
        try:
            results.send(msg)
        except Exception:  # the batch does not pickle: report that instead
            wid, gen, idx, _, _, state = msg
            results.send((wid, gen, idx, "error", format_error(wid, spec.method), state))

    # interrupted with the loader, or the loader is gone: nothing to report to
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        _run(spec, worker_id, rng_state, get_task, put)


class ProcessPool:
    """Worker processes, each with a task pipe and a result pipe.

    Plain pipes rather than multiprocessing queues: no feeder threads in the loader's
    process (which would make the next fork unsafe), and waiting on the result pipes and
    the processes' sentinels together notices a dead worker at once instead of hanging.
    """

    def __init__(
        self, ctx: BaseContext, spec: WorkerSpec, rng_states: list[list[int] | None]
    ) -> None:
        self._tasks: list[connection.Connection] = []
        self._results: list[connection.Connection] = []
        self.workers: list[Any] = []
        for wid in range(spec.num_workers):
            task_r, task_w = ctx.Pipe(duplex=False)
            res_r, res_w = ctx.Pipe(duplex=False)
            p = ctx.Process(  # type: ignore[attr-defined]
                target=_process_main,
                args=(spec, wid, rng_states[wid], task_r, res_w),
                daemon=True,
                name=f"DataLoader worker {wid}",
            )
            p.start()
            task_r.close()
            res_w.close()
            self._tasks.append(task_w)
            self._results.append(res_r)
            self.workers.append(p)
        self._by_conn = {c: i for i, c in enumerate(self._results)}
        self._by_sentinel = {p.sentinel: i for i, p in enumerate(self.workers)}
        self._closed = False

    def send(self, worker_id: int, task: Any) -> None:
        self._tasks[worker_id].send(task)

    def recv(self, timeout: float) -> Any:
        """One answer, or None after `timeout`; RuntimeError if a worker died."""
        ready = connection.wait(self._results + list(self._by_sentinel), timeout)
        for obj in ready:
            wid = self._by_conn.get(obj)  # type: ignore[call-overload]
            if wid is not None:
                try:
                    return obj.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    self._died(wid)
        for obj in ready:
            wid = self._by_sentinel.get(obj)  # type: ignore[call-overload]
            if wid is not None and not self._results[wid].poll():
                self._died(wid)
        return None

    def _died(self, worker_id: int) -> None:
        p = self.workers[worker_id]
        p.join(POLL_S)
        code = p.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self.shutdown()
        raise RuntimeError(
            f"DataLoader worker {worker_id} (pid {p.pid}) exited unexpectedly ({how})"
        )

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in self._tasks:
            with contextlib.suppress(OSError):  # that worker is gone already
                conn.send(None)
        # Drain answers while waiting: a worker blocked writing a batch must finish to exit.
        alive = {p.sentinel: p for p in self.workers if p.is_alive()}
        results = list(self._results)
        waited = 0.0
        while alive and waited < _SHUTDOWN_S:
            for obj in connection.wait(results + list(alive), 0.1):
                if obj in alive:
                    del alive[obj]  # type: ignore[arg-type]
                else:
                    try:
                        obj.recv()  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        results.remove(obj)  # type: ignore[arg-type]
            waited += 0.1
        for p in self.workers:
            if p.is_alive():
                p.terminate()
            p.join()
        for conn in self._tasks + self._results:
            conn.close()


class ThreadPool:
    """Worker threads: no start-up cost and no pickling, but they share the GIL."""

    def __init__(self, spec: WorkerSpec, rng_states: list[list[int] | None]) -> None:
        self._tasks: list[queue.SimpleQueue[Any]] = []
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.workers: list[threading.Thread] = []
        for wid in range(spec.num_workers):
            tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
            t = threading.Thread(
                target=_thread_main,
                args=(spec, wid, rng_states[wid], tasks, self._results),
                daemon=True,
                name=f"DataLoader worker {wid}",
            )
            t.start()
            self._tasks.append(tasks)
            self.workers.append(t)
        self._closed = False

    def send(self, worker_id: int, task: Any) -> None:
        self._tasks[worker_id].put(task)

    def recv(self, timeout: float) -> Any:
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            return None

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for q in self._tasks:
            q.put(None)
        for t in self.workers:
            if t is not threading.current_thread():
                t.join(_SHUTDOWN_S)


def _thread_main(
    spec: WorkerSpec,
    worker_id: int,
    rng_state: list[int] | None,
    tasks: queue.SimpleQueue[Any],
    results: queue.SimpleQueue[Any],
) -> None:
    def get_task() -> Any:
        try:
            return tasks.get(timeout=POLL_S)
        except queue.Empty:
            return _IDLE

    _run(spec, worker_id, rng_state, get_task, results.put)
