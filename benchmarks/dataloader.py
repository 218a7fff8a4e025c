"""DataLoader throughput: worker processes against worker threads, and start-up costs.

Two datasets: (a) a TensorDataset (each item is cheap tensor indexing, Python-bound) and
(b) a dataset whose __getitem__ does NumPy work per item (an FFT and a small matmul, which
release the GIL). For each: one epoch with num_workers=0, and with 2 workers as processes
and as threads; the median of a few runs, start-up included (non-persistent workers, as a
default loader runs). Then the time to start 2 workers and get the first batch with each
start method. Run: .venv/bin/python benchmarks/dataloader.py
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

import engine
from engine.utils.data import DataLoader, Dataset, TensorDataset

REPEATS = 5


class NumpyWork(Dataset[tuple[np.ndarray, int]]):
    """Per item: a 128x128 FFT and a 128x128 matmul, as an augmentation step might do."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.base = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        x = np.abs(np.fft.rfft2(self.base + np.float32(i)))[:, :64]
        return (x @ x.T).astype(np.float32)[:32, :32], i % 10


def epoch_time(loader: DataLoader[object]) -> float:
    t = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t


def median_time(make: object) -> float:
    return statistics.median(epoch_time(make()) for _ in range(REPEATS))  # type: ignore[operator]


def main() -> None:
    print(f"cpus: {len(os.sched_getaffinity(0))}, numpy {np.__version__}")
    tensors = TensorDataset(engine.randn(20000, 64), engine.randint(0, 10, (20000,)))
    numpy_ds = NumpyWork(2000)
    for name, ds, bs in (("tensor", tensors, 64), ("numpy", numpy_ds, 32)):
        rows = [("num_workers=0", lambda ds=ds, bs=bs: DataLoader(ds, batch_size=bs))]
        rows += [
            (
                f"2 {method}",
                lambda ds=ds, bs=bs, m=method: DataLoader(
                    ds, batch_size=bs, num_workers=2, worker_method=m
                ),
            )
            for method in ("multiprocessing", "thread")
        ]
        for label, make in rows:
            t = median_time(make)
            print(f"{name:7s} {label:20s} {t * 1e3:8.1f} ms/epoch  {len(ds) / t:9.0f} items/s")
    for method in ("fork", "forkserver", "spawn"):
        loader = DataLoader(tensors, batch_size=64, num_workers=2, multiprocessing_context=method)
        t = time.perf_counter()
        next(iter(loader))
        ms = (time.perf_counter() - t) * 1e3
        print(f"start 2 workers ({method:10s}) + first batch: {ms:7.1f} ms")
    loader = DataLoader(tensors, batch_size=64, num_workers=2, worker_method="thread")
    t = time.perf_counter()
    next(iter(loader))
    print(f"start 2 workers (threads   ) + first batch: {(time.perf_counter() - t) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
