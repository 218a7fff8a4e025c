"""Writes the PyTorch reference fixtures tests/test_optim.py reads. Run by hand, never in CI:

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy
    /tmp/torch/bin/python tests/make_optim_fixtures.py

Optimizers: for each entry of OPTIMIZERS, 20 steps on three parameters of different shapes
with gradients drawn from a fixed seed and assigned to `.grad` (no model needed; some
steps leave a parameter without a gradient), recording the parameters after every step,
the final state dict's tensors, and its structure (state keys in order, param groups).
Schedulers: for each entry of SCHEDULERS, get_last_lr() after construction and after each
of 50 steps (WarmupCosineLR, which PyTorch lacks, from its documented formula), and the
keys of the scheduler's state dict. Arrays go to tests/fixtures/optim.npz, the configs and
structures to optim.json, with the torch version and a hash of this script.
"""

from __future__ import annotations

import math
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402

SOURCES = ("make_optim_fixtures.py",)
STEPS = 20
SCHED_STEPS = 50
SHAPES = [[3, 4], [5], [2, 3, 2]]

# name, optimizer class, options, param groups (indices into SHAPES plus per-group
# options; None means one group with every parameter), and the (step, parameter) pairs
# that get no gradient.
OPTIMIZERS: list[dict[str, Any]] = [
    {"name": "sgd", "cls": "SGD", "kwargs": {"lr": 0.1}},
    {
        "name": "sgd_momentum",
        "cls": "SGD",
        "kwargs": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        "skip": [[0, 2], [3, 2], [4, 0]],
    },
    {
        "name": "sgd_nesterov",
        "cls": "SGD",
        "kwargs": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True},
    },
    {
        "name": "sgd_groups",
        "cls": "SGD",
        "kwargs": {"lr": 0.01, "momentum": 0.5},
        "groups": [{"params": [0], "lr": 0.1}, {"params": [1, 2], "weight_decay": 0.1}],
    },
    {"name": "adam", "cls": "Adam", "kwargs": {"lr": 0.01}},
    {
        "name": "adam_amsgrad",
        "cls": "Adam",
        "kwargs": {"lr": 0.01, "betas": [0.8, 0.99], "amsgrad": True},
        "skip": [[0, 1], [5, 1], [6, 2]],
    },
    {
        "name": "adam_weight_decay",
        "cls": "Adam",
        "kwargs": {"lr": 0.01, "weight_decay": 0.1, "maximize": True},
    },
    {"name": "adam_low_beta1", "cls": "Adam", "kwargs": {"lr": 0.02, "betas": [0.3, 0.9]}},
    {"name": "adamw", "cls": "AdamW", "kwargs": {"lr": 0.01}},
    {
        "name": "adamw_amsgrad",
        "cls": "AdamW",
        "kwargs": {"lr": 0.02, "weight_decay": 0.1, "amsgrad": True},
        "groups": [{"params": [0, 2]}, {"params": [1], "lr": 0.005}],
    },
    {"name": "rmsprop", "cls": "RMSprop", "kwargs": {"lr": 0.01}},
    {
        "name": "rmsprop_centered",
        "cls": "RMSprop",
        "kwargs": {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.01},
        "skip": [[2, 0]],
    },
    {
        "name": "adagrad",
        "cls": "Adagrad",
        "kwargs": {
            "lr": 0.1,
            "lr_decay": 0.01,
            "weight_decay": 0.01,
            "initial_accumulator_value": 0.1,
        },
        "skip": [[1, 1]],
    },
]

# Every scheduler drives an optimizer with two groups (lrs 0.1 and 0.02); "optimizer"
# names its class (SGD with momentum unless given). LambdaLR's "inverse" is
# lambda e: 1 / (1 + 0.1 * e), which the test defines too.
SCHEDULERS: list[dict[str, Any]] = [
    {"name": "lambda", "sched": ["LambdaLR", {"lr_lambda": "inverse"}]},
    {"name": "step", "sched": ["StepLR", {"step_size": 7, "gamma": 0.5}]},
    {"name": "multistep", "sched": ["MultiStepLR", {"milestones": [5, 12, 12, 30], "gamma": 0.3}]},
    {"name": "exponential", "sched": ["ExponentialLR", {"gamma": 0.93}]},
    {"name": "cosine", "sched": ["CosineAnnealingLR", {"T_max": 20, "eta_min": 0.001}]},
    {"name": "linear", "sched": ["LinearLR", {"start_factor": 0.25, "total_iters": 10}]},
    {"name": "onecycle", "sched": ["OneCycleLR", {"max_lr": [0.5, 0.05], "total_steps": 60}]},
    {
        "name": "onecycle_adam_three_phase",
        "optimizer": "Adam",
        "sched": [
            "OneCycleLR",
            {
                "max_lr": 0.01,
                "total_steps": 50,
                "anneal_strategy": "linear",
                "three_phase": True,
                "pct_start": 0.25,
            },
        ],
    },
    {
        "name": "sequential",
        "sched": [
            "SequentialLR",
            {
                "schedulers": [
                    ["LinearLR", {"start_factor": 0.1, "total_iters": 5}],
                    ["CosineAnnealingLR", {"T_max": 30, "eta_min": 1e-4}],
                ],
                "milestones": [5],
            },
        ],
    },
    {
        "name": "plateau",
        "sched": [
            "ReduceLROnPlateau",
            {"factor": 0.5, "patience": 3, "threshold": 0.01, "cooldown": 2, "min_lr": 0.004},
        ],
        "metrics": "falling",
    },
    {
        "name": "plateau_max_abs",
        "sched": [
            "ReduceLROnPlateau",
            {
                "mode": "max",
                "factor": 0.3,
                "patience": 2,
                "threshold": 0.05,
                "threshold_mode": "abs",
                "min_lr": [0.001, 0.0],
            },
        ],
        "metrics": "rising",
    },
    {
        "name": "warmup_cosine",
        "sched": ["WarmupCosineLR", {"warmup_steps": 10, "total_steps": 40, "min_lr": 0.001}],
    },
]


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def metrics(kind: str) -> list[float]:
    """A noisy curve that improves, then stalls: plateaus for the scheduler to find."""
    rng = rng_for(kind)
    t = np.arange(SCHED_STEPS)
    curve = 1.0 / (1.0 + 0.3 * np.minimum(t, 15)) + 0.02 * rng.standard_normal(SCHED_STEPS)
    return [float(v) for v in (curve if kind == "falling" else -curve)]


def run_optimizer(cfg: dict[str, Any], store: dict[str, np.ndarray]) -> dict[str, Any]:
    name = cfg["name"]
    rng = rng_for(name)
    inits = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [rng.standard_normal([STEPS, *s]).astype(np.float32) for s in SHAPES]
    params = [torch.tensor(a, requires_grad=True) for a in inits]
    groups = cfg.get("groups")
    kwargs = {k: tuple(v) if k == "betas" else v for k, v in cfg["kwargs"].items()}
    if groups is None:
        opt = getattr(torch.optim, cfg["cls"])(params, **kwargs)
    else:
        spec = [{**g, "params": [params[i] for i in g["params"]]} for g in groups]
        opt = getattr(torch.optim, cfg["cls"])(spec, **kwargs)
    skip = {tuple(s) for s in cfg.get("skip", [])}
    trajectories = [np.empty([STEPS, *s], np.float32) for s in SHAPES]
    for step in range(STEPS):
        for i, p in enumerate(params):
            p.grad = None if (step, i) in skip else torch.from_numpy(grads[i][step].copy())
        opt.step()
        for i, p in enumerate(params):
            trajectories[i][step] = p.detach().numpy()
    for i in range(len(SHAPES)):
        store[f"{name}/init{i}"] = inits[i]
        store[f"{name}/grads{i}"] = grads[i]
        store[f"{name}/traj{i}"] = trajectories[i]
    sd = opt.state_dict()
    state_keys = {}
    for idx, entry in sd["state"].items():
        state_keys[str(idx)] = list(entry)
        for key, value in entry.items():
            store[f"{name}/state/{idx}/{key}"] = value.numpy()
    param_groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return {
        **cfg,
        "state_order": [int(k) for k in sd["state"]],
        "state_keys": state_keys,
        "param_groups": param_groups,
    }


def inverse(epoch: int) -> float:
    return 1 / (1 + 0.1 * epoch)


def make_scheduler(opt: torch.optim.Optimizer, cls: str, kwargs: dict[str, Any]) -> Any:
    kwargs = dict(kwargs)
    if cls == "LambdaLR":
        kwargs["lr_lambda"] = inverse
    if cls == "SequentialLR":
        kwargs["schedulers"] = [make_scheduler(opt, c, k) for c, k in kwargs["schedulers"]]
    return getattr(torch.optim.lr_scheduler, cls)(opt, **kwargs)


def warmup_cosine(base_lr: float, step: int, warmup: int, total: int, min_lr: float) -> float:
    """WarmupCosineLR's documented formula, written independently of the engine's code."""
    if step < warmup:
        return base_lr * step / warmup
    if step > total:
        return min_lr
    return min_lr + (base_lr - min_lr) * 0.5 * (
        1 + math.cos(math.pi * (step - warmup) / (total - warmup))
    )


def run_scheduler(cfg: dict[str, Any], store: dict[str, np.ndarray]) -> dict[str, Any]:
    name = cfg["name"]
    cls, kwargs = cfg["sched"]
    base = [0.1, 0.02]
    if cls == "WarmupCosineLR":
        lrs = [
            [
                warmup_cosine(b, s, kwargs["warmup_steps"], kwargs["total_steps"], kwargs["min_lr"])
                for b in base
            ]
            for s in range(SCHED_STEPS + 1)
        ]
        store[f"sched/{name}/lrs"] = np.array(lrs)
        return {**cfg, "state_keys": None}
    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    groups = [{"params": [params[0]], "lr": base[0]}, {"params": [params[1]], "lr": base[1]}]
    if cfg.get("optimizer", "SGD") == "Adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(groups)
    else:
        opt = torch.optim.SGD(groups, momentum=0.9)
    sched = make_scheduler(opt, cls, kwargs)
    seq = metrics(cfg["metrics"]) if "metrics" in cfg else None
    lrs = [list(sched.get_last_lr())]
    momenta = [[g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]]
    for step in range(SCHED_STEPS):
        opt.step()
        if seq is None:
            sched.step()
        else:
            sched.step(seq[step])
        lrs.append(list(sched.get_last_lr()))
        momenta.append([g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups])
    store[f"sched/{name}/lrs"] = np.array(lrs, dtype=np.float64)
    store[f"sched/{name}/momenta"] = np.array(momenta, dtype=np.float64)
    out = {**cfg, "state_keys": sorted(sched.state_dict())}
    if seq is not None:
        out["metric_values"] = seq
    return out


def main() -> None:
    torch.use_deterministic_algorithms(True)
    store: dict[str, np.ndarray] = {}
    optimizers = [run_optimizer(cfg, store) for cfg in OPTIMIZERS]
    schedulers = [run_scheduler(cfg, store) for cfg in SCHEDULERS]
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "optim.npz", **store)
    write_meta(
        "optim",
        SOURCES,
        torch.__version__,
        steps=STEPS,
        sched_steps=SCHED_STEPS,
        shapes=SHAPES,
        optimizers=optimizers,
        schedulers=schedulers,
    )
    print(f"wrote {len(store)} arrays with torch {torch.__version__}")


if __name__ == "__main__":
    main()
