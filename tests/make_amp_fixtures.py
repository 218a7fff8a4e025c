"""Writes the PyTorch reference fixtures tests/test_amp.py reads. Run by hand, never in CI:

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy
    /tmp/torch/bin/python tests/make_amp_fixtures.py

GradScaler: for each entry of SCALERS, torch.amp.GradScaler("cpu", ...) drives SGD on two
parameters through STEPS steps of scale(loss).backward(), step(), update(), where the
gradients are fixed arrays times the scale and some steps plant an inf or a NaN in one
of them (so steps are skipped, the scale backs off and, with a short growth interval,
grows). After every step it records the scale, the growth tracker, whether the
optimizer step ran, both parameters and both gradients as unscale_ left them; at the
end the state dict, and the state dict of a fresh scaler that loaded it. Arrays (the
inputs among them) go to tests/fixtures/amp.npz, the configs and state dicts to
amp.json, with the torch version and a hash of this script.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402

SOURCES = ("make_amp_fixtures.py",)
STEPS = 12
SHAPES = [[3, 4], [5]]
# step -> (parameter, flat index, value) planted in that step's gradient
BAD = {2: (0, 5, "inf"), 3: (1, 0, "nan"), 7: (0, 0, "-inf"), 8: (1, 3, "nan")}
SCALERS: list[dict[str, Any]] = [
    {"name": "defaults", "kwargs": {}},
    {
        "name": "short_interval",
        "kwargs": {"init_scale": 1024.0, "growth_interval": 3},
    },
    {
        "name": "custom_factors",
        "kwargs": {
            "init_scale": 300.0,
            "growth_factor": 3.0,
            "backoff_factor": 0.3,
            "growth_interval": 2,
        },
    },
]


def initial_params() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def step_grads(step: int) -> list[np.ndarray]:
    """The unscaled gradients of a step, with its planted inf/NaN if any."""
    rng = np.random.default_rng(100 + step)
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    if step in BAD:
        i, j, v = BAD[step]
        grads[i].reshape(-1)[j] = float(v)
    return grads


def run(kwargs: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in initial_params()]
    opt = torch.optim.SGD(params, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", **kwargs)
    record: dict[str, list[Any]] = {"scale": [], "tracker": [], "stepped": []}
    for step in range(STEPS):
        opt.zero_grad()
        grads = [torch.from_numpy(g) for g in step_grads(step)]
        # loss = sum(p * g): its gradient is g times the scale
        loss = sum((p * g).sum() for p, g in zip(params, grads, strict=True))
        scaler.scale(loss).backward()
        before = [p.detach().clone() for p in params]
        scaler.unscale_(opt)
        for i, p in enumerate(params):
            arrays[f"{name}/grad{i}/{step}"] = p.grad.numpy().copy()
        scaler.step(opt)
        scaler.update()
        stepped = not all(torch.equal(b, p) for b, p in zip(before, params, strict=True))
        record["scale"].append(scaler.get_scale())
        record["tracker"].append(scaler._get_growth_tracker())
        record["stepped"].append(stepped)
        for i, p in enumerate(params):
            arrays[f"{name}/param{i}/{step}"] = p.detach().numpy().copy()
    state = scaler.state_dict()
    fresh = torch.amp.GradScaler("cpu")
    fresh.load_state_dict(state)
    return {**record, "state_dict": state, "reloaded": fresh.state_dict()}


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    # the inputs too, so that the test needs no copy of how they are drawn
    for i, p in enumerate(initial_params()):
        arrays[f"input/param{i}"] = p
    for step in range(STEPS):
        for i, g in enumerate(step_grads(step)):
            arrays[f"input/grad{i}/{step}"] = g
    results = {c["name"]: run(c["kwargs"], arrays, c["name"]) for c in SCALERS}
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "amp.npz", **arrays)
    write_meta(
        "amp",
        SOURCES,
        torch.__version__,
        steps=STEPS,
        shapes=SHAPES,
        bad={str(k): list(v) for k, v in BAD.items()},
        scalers=SCALERS,
        results=results,
    )


if __name__ == "__main__":
    main()
