"""`DataLoader`: batches from a dataset, in one process or with parallel workers, resumable.

PyTorch's arguments, validation, length and order. With `num_workers > 0` the batches are
the same, in the same order, as with `num_workers=0`: workers fetch whole batches by index
list, `prefetch_factor * num_workers` of them in flight, and the loader hands them out in
sampler order whatever order they finish in.

Workers are processes by default (`worker_method="multiprocessing"`); `"thread"` runs them
as threads. benchmarks/dataloader.py, 2 workers on a shared 2-core machine, one epoch with
start-up, median of 5 (two runs): a TensorDataset (20000 items, batch 64) took 245-277 ms
with num_workers=0, 227-451 ms with processes, 317-338 ms with threads; a dataset doing
NumPy work per item (2000 items, an FFT and a matmul each) took 258-267 ms, 367-428 ms and
271-374 ms. Starting 2 workers and getting the first batch: threads 6-9 ms, fork 12-29 ms,
forkserver 410-450 ms, spawn 350-550 ms. So on 2 cores neither backend beats the other
reliably (nor the main process: it needs one of the two cores to collate and receive), and
items that cost Python bytecode gain nothing from threads. What decides the default is
correctness: threads share the engine's default generator, so random transforms in a
dataset are reproducible only in worker processes. Threads remain the cheap choice for
GIL-releasing datasets with no randomness, or with randomness drawn from
`get_worker_info().rng`. Workers limit BLAS to one thread (see worker.py): without that,
two forked workers over-subscribed the cores and the NumPy dataset took 4.4 s.

The start method, when `multiprocessing_context` is not given, is fork where it is safe: on
Linux, with no other thread running in this process and CUDA not loaded (a forked child
inherits held locks and cannot use a parent's CUDA context). Otherwise forkserver, which
forks from a clean server process (spawn where there is none); both need a picklable
dataset and collate_fn, and start slower (benchmarks/dataloader.py).

Resuming: `state_dict()` records the epoch, the number of batches yielded in it, the
loader generator's state when the epoch's sampling began, the workers' base seed, each
worker's generator state after its last yielded batch, and the sampler's state (see
sampler.py). `load_state_dict()` makes the next `iter()` yield exactly the rest of that
epoch: a map-style dataset skips the yielded batches by index, without loading them; an
iterable one loads and drops them. The state is plain ints, lists and dicts (JSON). It
does not restore the default generator, which a checkpoint's `rng_state` does.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any, Generic, TypeVar

from engine import cuda
from engine import random as engine_random
from engine.factories import randint
from engine.random import Generator, generator_or_default
from engine.utils.data.collate import default_collate, default_convert
from engine.utils.data.dataset import Dataset, IterableDataset
from engine.utils.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)
from engine.utils.data.worker import POLL_S, Fetcher, ProcessPool, ThreadPool, WorkerSpec, reraise

T_co = TypeVar("T_co", covariant=True)
_SEED_HIGH = (1 << 63) - 1
_FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")
_WORKER_METHODS = ("multiprocessing", "thread")


def _default_context() -> BaseContext:
    methods = multiprocessing.get_all_start_methods()
    cuda_loaded = "cupy" in sys.modules and cuda.is_available()
    if "fork" in methods and threading.active_count() == 1 and not cuda_loaded:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["engine"])  # the server imports NumPy and the engine once
        return ctx
    return multiprocessing.get_context("spawn")


@dataclass
class _Epoch:
    """What the loader knows about the epoch in progress, for state_dict()."""

    epoch: int
    base_seed: int
    generator_state: list[int] | None
    sampler_state: dict[str, Any] | None
    yielded: int = 0
    finished: bool = False
    worker_states: list[list[int] | None] = field(default_factory=list)


class DataLoader(Generic[T_co]):
    """Iterates over batches of `dataset`; PyTorch's arguments and behaviour.

    `prefetch_factor` defaults to None, meaning 2 with workers, and may only be given with
    `num_workers > 0`, as in PyTorch 2. `pin_memory` is accepted and has no effect yet.
    `worker_method` ("multiprocessing" or "thread") is the engine's own; see the module
    docstring.
    """

    def __init__(
        self,
        dataset: Dataset[T_co],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler[Any] | Iterable[Any] | None = None,
        batch_sampler: Sampler[list[Any]] | Iterable[list[Any]] | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: str | BaseContext | None = None,
        generator: Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        worker_method: str = "multiprocessing",
    ) -> None:
        if num_workers < 0:
            raise ValueError(
                "num_workers option should be non-negative; "
                "use num_workers=0 to disable multiprocessing."
            )
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing."
                "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor "
                "to None."
            )
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None and prefetch_factor < 0:
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if worker_method not in _WORKER_METHODS:
            raise ValueError(
                f"worker_method should be one of {_WORKER_METHODS}, got {worker_method!r}"
            )
        if generator is not None:
            generator_or_default(generator)  # a TypeError now rather than at the first epoch

        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.worker_method = worker_method
        self.multiprocessing_context = self._check_context(multiprocessing_context)

        if isinstance(dataset, IterableDataset):
            self._iterable = True
            if shuffle not in {False, None}:
                raise ValueError(
                    "DataLoader with IterableDataset: expected unspecified shuffle option, "
                    f"but got shuffle={shuffle}"
                )
            if sampler is not None:
                raise ValueError(
                    "DataLoader with IterableDataset: expected unspecified sampler option, "
                    f"but got sampler={sampler}"
                )
            if batch_sampler is not None:
                raise ValueError(
                    "DataLoader with IterableDataset: expected unspecified batch_sampler "
                    f"option, but got batch_sampler={batch_sampler}"
                )
        else:
            self._iterable = False
            shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, "
                    "sampler, and drop_last"
                )
            batch_size = None
            drop_last = False
        elif batch_size is None and drop_last:
            raise ValueError(
                "batch_size=None option disables auto-batching and is mutually exclusive "
                "with drop_last"
            )
        if sampler is None and not self._iterable:
            sampler = (
                RandomSampler(dataset, generator=generator)  # type: ignore[arg-type]
                if shuffle
                else SequentialSampler(dataset)  # type: ignore[arg-type]
            )
        if batch_size is not None and batch_sampler is None and not self._iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)  # type: ignore[arg-type]

        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.generator = generator
        self._auto_collation = batch_size is not None or batch_sampler is not None
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self.persistent_workers = persistent_workers
        if pin_memory and not cuda.is_available():
            warnings.warn(
                "'pin_memory' argument is set as true but no accelerator is found, "
                "then device pinned memory won't be used.",
                stacklevel=2,
            )

        self._iterator: _MultiWorkerIter | None = None  # the persistent workers' iterator
        self._next_epoch = 0
        self._epoch: _Epoch | None = None
        self._pending: dict[str, Any] | None = None
        self._initialized = True
        self._check_worker_number()

    def _check_context(self, ctx: str | BaseContext | None) -> BaseContext | None:
        if ctx is None:
            return None
        if self.num_workers == 0:
            raise ValueError(
                "multiprocessing_context can only be used with multi-process loading "
                f"(num_workers > 0), but got num_workers={self.num_workers}"
            )
        if isinstance(ctx, str):
            valid = multiprocessing.get_all_start_methods()
            if ctx not in valid:
                raise ValueError(
                    "multiprocessing_context option should specify a valid start method in "
                    f"{valid!r}, but got multiprocessing_context={ctx!r}"
                )
            return multiprocessing.get_context(ctx)
        if not isinstance(ctx, BaseContext):
            raise TypeError(
                "multiprocessing_context option should be a valid context object or a string "
                f"specifying the start method, but got multiprocessing_context={ctx}"
            )
        return ctx

    def _check_worker_number(self) -> None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if cpus and self.num_workers > cpus:
            warnings.warn(
                f"This DataLoader will create {self.num_workers} worker processes in total. "
                f"Our suggested max number of worker in current system is {cpus}, which is "
                "smaller than what this DataLoader is going to create. Please be aware that "
                "excessive worker creation might get DataLoader running slow or even freeze, "
                "lower the worker number to avoid potential slowness/freeze if necessary.",
                stacklevel=3,
            )

    def __setattr__(self, attr: str, val: Any) -> None:
        if self.__dict__.get("_initialized") and attr in _FROZEN:
            raise ValueError(
                f"{attr} attribute should not be set after {type(self).__name__} is initialized"
            )
        super().__setattr__(attr, val)

    @property
    def _index_sampler(self) -> Any:
        return self.batch_sampler if self.batch_sampler is not None else self.sampler

    def __len__(self) -> int:
        if self._iterable:
            length = len(self.dataset)  # type: ignore[arg-type]
            if self.batch_size is not None:
                length = (
                    length // self.batch_size if self.drop_last else -(-length // self.batch_size)
                )
            return length
        return len(self._index_sampler)

    # ---- epochs ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        resume, self._pending = self._pending, None
        epoch = resume["epoch"] if resume is not None else self._next_epoch
        self._next_epoch = epoch + 1
        reuse = self.persistent_workers and self._iterator is not None and not self._iterator.closed
        if resume is not None and resume.get("base_seed") is not None:
            base_seed = int(resume["base_seed"])
        elif reuse:
            base_seed = self._iterator.base_seed  # type: ignore[union-attr]
        else:  # a new set of workers gets a new base seed, as PyTorch draws one per iterator
            base_seed = int(randint(0, _SEED_HIGH, (), generator=self.generator).item())
        gen_state = None if self.generator is None else self.generator.get_state().tolist()
        sampler_iter = None if self._iterable else iter(self._index_sampler)
        state_fn = getattr(self._index_sampler, "state_dict", None)
        record = _Epoch(epoch, base_seed, gen_state, state_fn() if callable(state_fn) else None)
        skip = int(resume["batches_yielded"]) if resume is not None else 0
        if self.num_workers == 0:
            return _SingleProcessIter(self, record, sampler_iter, skip)
        states = resume.get("worker_rng_states") if resume is not None else None
        if not states or len(states) != self.num_workers or self._iterable:
            states = None
        if reuse:
            it = self._iterator
            it.begin(record, sampler_iter, skip, None)  # type: ignore[union-attr]
        else:
            it = _MultiWorkerIter(self, base_seed)
            it.begin(record, sampler_iter, skip, states)
            if self.persistent_workers:
                self._iterator = it
        return it  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        """Where this loader is, as plain JSON-able values (see the module docstring)."""
        if self._pending is not None:
            return dict(self._pending)
        rec = self._epoch
        if rec is not None and not rec.finished:
            return {
                "epoch": rec.epoch,
                "batches_yielded": rec.yielded,
                "generator_state": rec.generator_state,
                "base_seed": rec.base_seed,
                "worker_rng_states": list(rec.worker_states) or None,
                "sampler": rec.sampler_state,
            }
        state_fn = getattr(self._index_sampler, "state_dict", None)
        persistent = self._iterator is not None and not self._iterator.closed
        return {
            "epoch": self._next_epoch,
            "batches_yielded": 0,
            "generator_state": None
            if self.generator is None
            else self.generator.get_state().tolist(),
            # persistent workers carry their seeds and generators into the next epoch
            "base_seed": self._iterator.base_seed if persistent else None,  # type: ignore[union-attr]
            "worker_rng_states": list(self._iterator.worker_states) if persistent else None,  # type: ignore[union-attr]
            "sampler": state_fn() if callable(state_fn) else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next `iter()` continue from `state_dict` (see the module docstring)."""
        if self._iterator is not None:  # its workers hold the old position
            self._iterator.shutdown()
            self._iterator = None
        if self.generator is not None and state_dict.get("generator_state") is not None:
            self.generator.set_state(state_dict["generator_state"])
        load = getattr(self._index_sampler, "load_state_dict", None)
        if state_dict.get("sampler") is not None and callable(load):
            load(state_dict["sampler"])
        self._pending = dict(state_dict)
        self._next_epoch = int(state_dict["epoch"])
        self._epoch = None

    def __del__(self) -> None:
        it = self.__dict__.get("_iterator")
        if it is not None:
            it.shutdown()


class _BaseIter:
    def __init__(self, loader: DataLoader[Any]) -> None:
        self._loader = loader
        self._auto_collation = loader._auto_collation
        self._iterable = loader._iterable
        self._batch_size = loader.batch_size
        self._index_len = None if loader._iterable else len(loader._index_sampler)

    def _start(self, record: _Epoch, sampler_iter: Iterator[Any] | None, skip: int) -> None:
        self._record = record
        self._sampler_iter = sampler_iter
        self._discard = 0
        self._loader._epoch = record
        if skip and sampler_iter is not None:  # map-style: skip by index, loading nothing
            for _ in range(skip):
                if next(sampler_iter, None) is None:
                    break
        else:
            self._discard = skip  # iterable: load and drop, to reach the same stream position
        record.yielded = skip

    def __iter__(self) -> _BaseIter:
        return self

    def __len__(self) -> int:
        return len(self._loader)

    def __next__(self) -> Any:
        try:
            if self._discard:
                self._skip_loaded()
            return self._next_data()
        except StopIteration:
            self._record.finished = True
            raise

    def _skip_loaded(self) -> None:
        n, self._discard = self._discard, 0
        for _ in range(n):
            self._next_data()

    def _next_data(self) -> Any:
        raise NotImplementedError


class _SingleProcessIter(_BaseIter):
    def __init__(
        self,
        loader: DataLoader[Any],
        record: _Epoch,
        sampler_iter: Iterator[Any] | None,
        skip: int,
    ) -> None:
        super().__init__(loader)
        self._fetcher = Fetcher(
            loader.dataset,
            loader._iterable,
            self._auto_collation,
            loader.collate_fn,
            loader.drop_last,
        )
        self._fetcher.reset()
        self._start(record, sampler_iter, skip)

    def _skip_loaded(self) -> None:
        # The dropped batches' draws from the default generator were made before the
        # checkpoint that restores it; replaying them must not make them twice.
        state = engine_random.get_rng_state()
        try:
            super()._skip_loaded()
        finally:
            engine_random.set_rng_state(state)

    def _next_data(self) -> Any:
        arg = self._batch_size if self._sampler_iter is None else next(self._sampler_iter)
        try:
            data = self._fetcher.fetch(arg)
        except StopIteration:  # the end of an iterable dataset: no batch was used up
            raise
        except Exception:
            self._record.yielded += 1  # the batch's place in the epoch is used up
            raise
        self._record.yielded += 1
        return data


class _MultiWorkerIter(_BaseIter):
    """Sends batch tasks to the workers and hands the answers out in task order."""

    def __init__(self, loader: DataLoader[Any], base_seed: int) -> None:
        super().__init__(loader)
        self.base_seed = base_seed
        self.closed = False
        self._num_workers = loader.num_workers
        self._persistent = loader.persistent_workers
        self._max_in_flight = loader.prefetch_factor * loader.num_workers  # type: ignore[operator]
        self._timeout = loader.timeout
        self._spec = WorkerSpec(
            loader.dataset,
            loader._iterable,
            self._auto_collation,
            loader.collate_fn,
            loader.drop_last,
            base_seed,
            loader.num_workers,
            loader.worker_init_fn,
            loader.worker_method,
        )
        self._pool: ProcessPool | ThreadPool | None = None
        self._generation = 0
        self.worker_states: list[list[int] | None] = [None] * self._num_workers

    def begin(
        self,
        record: _Epoch,
        sampler_iter: Iterator[Any] | None,
        skip: int,
        rng_states: list[list[int] | None] | None,
    ) -> None:
        """Start an epoch; the first one also starts the workers (with rng_states, if any)."""
        if rng_states is not None:
            self.worker_states = list(rng_states)
        if self._pool is None:
            if self._spec.method == "thread":
                self._pool = ThreadPool(self._spec, self.worker_states)
            else:
                ctx = self._loader.multiprocessing_context or _default_context()
                self._pool = ProcessPool(ctx, self._spec, self.worker_states)
        self._generation += 1
        self._start(record, sampler_iter, skip)
        record.worker_states = self.worker_states if not self._iterable else []
        self._send_idx = self._rcvd_idx = 0 if self._iterable else record.yielded
        self._task_worker: dict[int, int] = {}
        self._results: dict[int, Any] = {}
        self._in_flight = [0] * self._num_workers
        self._active = [True] * self._num_workers
        self._next_worker = 0
        while self._put_task():
            pass

    def _put_task(self) -> bool:
        """Send the next batch task if the in-flight budget allows; False if none was sent."""
        if sum(self._in_flight) >= self._max_in_flight:
            return False
        if self._sampler_iter is not None:
            arg = next(self._sampler_iter, None)
            if arg is None:
                return False
            wid = self._send_idx % self._num_workers  # a fixed worker per batch: see state_dict
        else:
            if not any(self._active):
                return False
            while not self._active[self._next_worker]:
                self._next_worker = (self._next_worker + 1) % self._num_workers
            wid, arg = self._next_worker, self._batch_size
            self._next_worker = (wid + 1) % self._num_workers
        self._pool.send(wid, (self._generation, self._send_idx, arg))  # type: ignore[union-attr]
        self._task_worker[self._send_idx] = wid
        self._in_flight[wid] += 1
        self._send_idx += 1
        return True

    def _next_data(self) -> Any:
        if self.closed:
            raise StopIteration
        while True:
            # tasks of an iterable worker that ran out will never be answered: pass them by
            while self._rcvd_idx < self._send_idx:
                wid = self._task_worker[self._rcvd_idx]
                if self._rcvd_idx in self._results or self._active[wid]:
                    break
                del self._task_worker[self._rcvd_idx]
                self._rcvd_idx += 1
            else:
                if not self._persistent:
                    self.shutdown()
                raise StopIteration
            if self._rcvd_idx in self._results:
                return self._deliver(self._results.pop(self._rcvd_idx))
            msg = self._receive()
            wid, gen, idx, kind = msg[:4]
            if gen != self._generation:
                continue  # an answer to an epoch that was abandoned
            self._in_flight[wid] -= 1
            if kind == "end":
                self._active[wid] = False
                self._in_flight[wid] = 0
                self._put_task()
            elif idx == self._rcvd_idx:
                return self._deliver(msg)
            else:
                self._results[idx] = msg

    def _receive(self) -> Any:
        start = time.monotonic()
        while True:
            wait = POLL_S
            if self._timeout > 0:
                left = start + self._timeout - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
                wait = min(wait, left)
            try:
                msg = self._pool.recv(wait)  # type: ignore[union-attr]
            except RuntimeError:  # a worker died: the pool is closed, so is this iterator
                self.closed = True
                raise
            if msg is not None:
                return msg

    def _deliver(self, msg: Any) -> Any:
        wid, _, idx, kind, payload, rng_state = msg
        del self._task_worker[idx]
        self._rcvd_idx += 1
        self._record.yielded += 1
        self.worker_states[wid] = rng_state
        self._put_task()
        if kind == "error":
            reraise(*payload)
        return payload

    def shutdown(self) -> None:
        if not self.closed:
            self.closed = True
            if self._pool is not None:
                self._pool.shutdown()

    def __del__(self) -> None:
        self.shutdown()
