"""Writes the PyTorch reference fixtures tests/test_layers.py reads. Run by hand, never in CI:

    /work/torchenv/bin/python tests/make_layer_fixtures.py   (torch 2.13.0, CPU)

For every case of tests/layer_cases.py it builds the PyTorch module with a fixed seed and
stores, in tests/fixtures/layers.npz: its state dict, the input, the output, an upstream
gradient, the gradients of the input and of every parameter, and the state dict after the
step (BatchNorm's running statistics). layers.json records the state-dict keys in order,
the PyTorch version and a hash of this script and of layer_cases.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402
from layer_cases import CASES, LayerCase, make_input, upstream  # noqa: E402

SOURCES = ("make_layer_fixtures.py", "layer_cases.py")


def run(case: LayerCase, store: dict[str, np.ndarray]) -> list[str]:
    torch.manual_seed(0)
    module = case.build(torch.nn)
    if case.random_stats:
        rng = np.random.default_rng(1)
        with torch.no_grad():
            module.running_mean.copy_(torch.from_numpy(rng.standard_normal(3).astype(np.float32)))
            module.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, 3).astype(np.float32)))
            module.num_batches_tracked.fill_(5)
    module.train(case.train)
    keys = list(module.state_dict())
    for k, v in module.state_dict().items():
        store[f"{case.name}/sd/{k}"] = v.numpy().copy()
    x = torch.from_numpy(make_input(case))
    store[f"{case.name}/in"] = x.numpy().copy()
    if x.is_floating_point():
        x.requires_grad_(True)
    out = module(x)
    store[f"{case.name}/out"] = out.detach().numpy().copy()
    for k, v in module.state_dict().items():
        store[f"{case.name}/after/{k}"] = v.numpy().copy()
    if out.requires_grad:
        gy = upstream(case, tuple(out.shape))
        store[f"{case.name}/gy"] = gy
        out.backward(torch.from_numpy(gy))
        if x.grad is not None:
            store[f"{case.name}/grad_in"] = x.grad.numpy().copy()
        for k, p in module.named_parameters():
            if p.grad is not None:
                store[f"{case.name}/grad/{k}"] = p.grad.numpy().copy()
    return keys


def main() -> None:
    names = [c.name for c in CASES]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate case names")
    store: dict[str, np.ndarray] = {}
    keys = {case.name: run(case, store) for case in CASES}
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "layers.npz", **store)
    write_meta("layers", SOURCES, torch.__version__, cases=names, state_dict_keys=keys)
    print(f"wrote {len(store)} arrays for {len(names)} cases with torch {torch.__version__}")


if __name__ == "__main__":
    main()
