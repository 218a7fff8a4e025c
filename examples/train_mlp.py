"""A short training run on the engine alone: an MLP learns two interleaved spirals.

Plain tensors, autograd and a hand-written SGD-with-momentum step, as a PyTorch user
would write it before reaching for nn and optim. `make serve` runs it for now.
"""

from __future__ import annotations

import math
import time

import numpy as np

import engine


def spirals(n: int, seed: int) -> tuple[engine.Tensor, engine.Tensor]:
    """n points per class on two interleaved spirals, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.25, 3 * math.pi, n)
    r = t / (3 * math.pi)
    points, labels = [], []
    for label, phase in ((0, 0.0), (1, math.pi)):
        xy = np.stack([r * np.cos(t + phase), r * np.sin(t + phase)], 1)
        points.append(xy + rng.normal(0, 0.02, xy.shape))
        labels.append(np.full(n, label))
    return (
        engine.tensor(np.concatenate(points), dtype=engine.float32),
        engine.tensor(np.concatenate(labels)),
    )


def init_linear(fan_in: int, fan_out: int, g: engine.Generator) -> list[engine.Tensor]:
    bound = 1 / math.sqrt(fan_in)  # PyTorch's default bound for Linear
    w = engine.empty(fan_in, fan_out).uniform_(-bound, bound, generator=g).requires_grad_()
    b = engine.empty(fan_out).uniform_(-bound, bound, generator=g).requires_grad_()
    return [w, b]


def forward(params: list[engine.Tensor], x: engine.Tensor) -> engine.Tensor:
    w1, b1, w2, b2, w3, b3 = params
    h = (x @ w1 + b1).tanh()
    h = (h @ w2 + b2).tanh()
    return h @ w3 + b3


def cross_entropy(logits: engine.Tensor, target: engine.Tensor) -> engine.Tensor:
    return -logits.log_softmax(1).gather(1, target.unsqueeze(1)).mean()


def main(steps: int = 2000, batch: int = 64, lr: float = 0.05, momentum: float = 0.9) -> float:
    g = engine.Generator().manual_seed(0)
    x, y = spirals(300, seed=0)
    params = init_linear(2, 64, g) + init_linear(64, 64, g) + init_linear(64, 2, g)
    velocity = [engine.zeros_like(p) for p in params]
    start = time.perf_counter()
    for step in range(1, steps + 1):
        idx = engine.randint(0, x.shape[0], (batch,), generator=g)
        loss = cross_entropy(forward(params, x[idx]), y[idx])
        for p in params:
            p.grad = None
        loss.backward()
        with engine.no_grad():
            for p, v in zip(params, velocity, strict=True):
                v.mul_(momentum).add_(p.grad)
                p.sub_(v, alpha=lr)
        if step % 250 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    with engine.no_grad():
        accuracy = (forward(params, x).argmax(1) == y).float().mean().item()
    elapsed = time.perf_counter() - start
    print(
        f"trained {steps} steps in {elapsed:.2f}s ({elapsed / steps * 1e3:.2f} ms/step); "
        f"train accuracy {accuracy:.1%}"
    )
    return accuracy


if __name__ == "__main__":
    main()
