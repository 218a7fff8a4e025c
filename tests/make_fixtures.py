"""Writes the PyTorch reference fixtures the op tests read. Run by hand, never in CI:

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy
    /tmp/torch/bin/python tests/make_fixtures.py

For every case of tests/op_cases.py it stores the inputs, PyTorch's outputs, a random
upstream gradient and PyTorch's input gradients in tests/fixtures/ops.npz, and records
the PyTorch version and a hash of this script and of op_cases.py in ops.json; a test
fails when either file changed after the fixtures were made.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402
from op_cases import CASES, INPLACE, Case, make_input  # noqa: E402

SOURCES = ("make_fixtures.py", "op_cases.py")


def upstream(case: Case, j: int, out: torch.Tensor) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/gy{j}".encode()))
    return rng.standard_normal(tuple(out.shape)).astype(str(out.dtype).removeprefix("torch."))


def run(case: Case, store: dict[str, np.ndarray], with_grad: bool) -> None:
    arrays = [make_input(case, i) for i in range(len(case.inputs))]
    tensors = []
    for i, (spec, a) in enumerate(zip(case.inputs, arrays, strict=True)):
        store[f"{case.name}/in{i}"] = a
        t = torch.from_numpy(a.copy())
        if with_grad and spec.grad and a.dtype == np.float32:
            t.requires_grad_(True)
        tensors.append(t)
    out = case.fn(torch, *tensors)
    outs = list(out) if isinstance(out, tuple | list) else [out]
    roots, grads = [], []
    for j, o in enumerate(outs):
        store[f"{case.name}/out{j}"] = o.detach().numpy()
        if o.requires_grad:
            gy = upstream(case, j, o)
            store[f"{case.name}/gy{j}"] = gy
            roots.append(o)
            grads.append(torch.from_numpy(gy))
    if roots:
        torch.autograd.backward(roots, grads)
    for i, t in enumerate(tensors):
        if t.grad is not None:
            store[f"{case.name}/grad{i}"] = t.grad.numpy()


def main() -> None:
    names = [c.name for c in CASES + INPLACE]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SystemExit(f"duplicate case names: {sorted(dupes)}")
    store: dict[str, np.ndarray] = {}
    for case in CASES:
        run(case, store, with_grad=True)
    for case in INPLACE:
        run(case, store, with_grad=False)
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "ops.npz", **store)
    write_meta("ops", SOURCES, torch.__version__, cases=names)
    print(f"wrote {len(store)} arrays for {len(names)} cases with torch {torch.__version__}")


if __name__ == "__main__":
    main()
