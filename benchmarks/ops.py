"""Per-op dispatch overhead on tiny tensors: engine against bare NumPy and PyTorch eager.

    python benchmarks/ops.py [--device cpu|cuda] [--repeat 7] [--number 2000]

For add, mul (shape 16), matmul (16x16) and sum (shape 16) it times, per call:
  numpy        the bare array op (CPU) / CuPy op (cuda)
  engine       engine forward, no tensor requiring grad
  torch        PyTorch eager forward, same (when torch is importable)
  numpy f+b    a hand-written forward and backward of the op on arrays
  engine f+b   engine forward + backward() into leaf .grad (grads reset each call)
  torch f+b    PyTorch the same
and prints a Markdown table with the goals' ratios: engine fwd / numpy (goal <= 3x) and
engine f+b / torch f+b (goal < 1). Results go to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine

try:
    import torch
except ImportError:
    torch = None


def per_call_us(fn: Callable[[], Any], number: int, repeat: int, sync: Callable[[], Any]) -> float:
    """Median over `repeat` runs of the mean time of `number` calls, in microseconds."""

    def run() -> None:
        for _ in range(number):
            fn()
        sync()

    run()  # warm-up: caches, lazy imports, GPU kernels compiled
    times = timeit.repeat(run, number=1, repeat=repeat)
    return statistics.median(times) / number * 1e6


def cases(
    xp: Any,
) -> dict[str, tuple[tuple[tuple[int, ...], ...], Callable[..., Any], Callable[..., Any]]]:
    """op -> (input shapes, forward f(*xs), hand-written backward b(g, *xs) -> grads)."""
    return {
        "add": (((16,), (16,)), lambda a, b: a + b, lambda g, a, b: (g.copy(), g.copy())),
        "mul": (((16,), (16,)), lambda a, b: a * b, lambda g, a, b: (g * b, g * a)),
        "matmul 16x16": (
            ((16, 16), (16, 16)),
            lambda a, b: a @ b,
            lambda g, a, b: (g @ b.T, a.T @ g),
        ),
        "sum": (((16,),), lambda a: a.sum(), lambda g, a: (xp.full(a.shape, g, dtype=a.dtype),)),
    }


def measure(
    name: str,
    host: list[np.ndarray],
    fwd: Callable[..., Any],
    bwd: Callable[..., Any],
    xp: Any,
    dev: Any,
    tdev: str | None,
    number: int,
    repeat: int,
    sync: Callable[[], Any],
) -> tuple[Any, ...]:
    """One table row: the op timed on arrays, engine tensors and (if tdev) torch tensors."""
    arrays = [xp.asarray(h) for h in host]
    t_np = per_call_us(lambda: fwd(*arrays), number, repeat, sync)

    def np_fb() -> None:
        y = fwd(*arrays)
        bwd(xp.ones_like(y), *arrays)

    t_np_fb = per_call_us(np_fb, number, repeat, sync)
    plain = [engine.tensor(h, device=dev) for h in host]
    t_eng = per_call_us(lambda: fwd(*plain), number, repeat, sync)
    leaves = [engine.tensor(h, device=dev, requires_grad=True) for h in host]

    def eng_fb() -> None:
        for t in leaves:
            t.grad = None
        y = fwd(*leaves)
        y.backward(engine.ones_like(y)) if y.ndim else y.backward()

    t_eng_fb = per_call_us(eng_fb, number, repeat, sync)
    t_torch = t_torch_fb = None
    if tdev is not None:
        tplain = [torch.tensor(h, device=tdev) for h in host]
        t_torch = per_call_us(lambda: fwd(*tplain), number, repeat, sync)
        tleaves = [torch.tensor(h, device=tdev, requires_grad=True) for h in host]

        def torch_fb() -> None:
            for t in tleaves:
                t.grad = None
            y = fwd(*tleaves)
            y.backward(torch.ones_like(y)) if y.ndim else y.backward()

        t_torch_fb = per_call_us(torch_fb, number, repeat, sync)
    return name, t_np, t_eng, t_torch, t_np_fb, t_eng_fb, t_torch_fb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--number", type=int, default=2000)
    args = p.parse_args()

    dev = engine.device(args.device)
    xp = engine.zeros(1, device=dev).device.xp
    if args.device == "cuda":
        sync = engine.cuda.synchronize
        tdev = "cuda"
    else:

        def sync() -> None:
            return None

        tdev = "cpu"
    if torch is not None and args.device == "cuda" and not torch.cuda.is_available():
        print("torch has no CUDA here: PyTorch columns left out", file=sys.stderr)
        use_torch = False
    else:
        use_torch = torch is not None
    if use_torch and args.device == "cuda":

        def sync() -> None:
            engine.cuda.synchronize()
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    rows = [
        measure(
            name,
            [rng.standard_normal(s).astype(np.float32) for s in shapes],
            fwd,
            bwd,
            xp,
            dev,
            tdev if use_torch else None,
            args.number,
            args.repeat,
            sync,
        )
        for name, (shapes, fwd, bwd) in cases(xp).items()
    ]

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}"

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"## ops.py --device {args.device}, {datetime.date.today().isoformat()}")
    print()
    print(
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, NumPy {np.__version__}, "
        f"torch {torch.__version__ if torch else 'not installed'}"
        + (f" ({torch.get_num_threads()} threads)" if torch else "")
        + f", OMP_NUM_THREADS={threads}"
    )
    if args.device == "cuda":
        print(
            f"- GPU: {xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, "
            f"CuPy {xp.__version__}"
        )
    print(f"- median of {args.repeat} runs of {args.number} calls; µs per call")
    print()
    print(
        "| op | numpy | engine | torch | engine/numpy (goal ≤ 3) "
        "| numpy f+b | engine f+b | torch f+b | engine/torch f+b (goal < 1) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, t_np, t_eng, t_torch, t_np_fb, t_eng_fb, t_torch_fb in rows:
        ratio_fb = "—" if t_torch_fb is None else f"{t_eng_fb / t_torch_fb:.2f}"
        print(
            f"| {name} | {fmt(t_np)} | {fmt(t_eng)} | {fmt(t_torch)} | {t_eng / t_np:.2f} "
            f"| {fmt(t_np_fb)} | {fmt(t_eng_fb)} | {fmt(t_torch_fb)} | {ratio_fb} |"
        )


if __name__ == "__main__":
    main()
