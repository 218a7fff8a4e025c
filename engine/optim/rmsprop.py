"""`RMSprop`, plain, centered and with momentum, following PyTorch's single-tensor update."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from engine.optim.optimizer import Optimizer, bump, check_lr, step_tensor, zeros_state


class RMSprop(Optimizer):
    """RMSprop, op for op as PyTorch's for-loop implementation:

        g = grad (+ weight_decay * p); square_avg = alpha * square_avg + (1 - alpha) * g * g;
        avg = sqrt(square_avg - grad_avg**2) (centered, grad_avg.lerp_(g, 1 - alpha)) or
        sqrt(square_avg), plus eps; with momentum buf = momentum * buf + g / avg and
        p -= lr * buf, else p -= lr * g / avg.

    `capturable`, `foreach` and `differentiable` only fill PyTorch's group keys.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not momentum >= 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not alpha >= 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        alpha = group["alpha"]
        eps = group["eps"]
        weight_decay = group["weight_decay"]
        momentum = group["momentum"]
        centered = group["centered"]
        maximize = group["maximize"]
        # grad_avg.lerp_(g, 1 - alpha): PyTorch's lerp, weight in float32 (see Adam).
        w = np.float32(1 - alpha)
        small = abs(w) < 0.5
        one_minus_w = float(np.float32(1) - w)
        state_of = self.state
        for p in group["params"]:
            grad_t = p.grad
            if grad_t is None:
                continue
            dev = p._device
            xp = dev.xp
            param = p._data
            state = state_of[p]
            if not state:
                state["step"] = step_tensor()
                state["square_avg"] = zeros_state(p)
                if momentum > 0:
                    state["momentum_buffer"] = zeros_state(p)
                if centered:
                    state["grad_avg"] = zeros_state(p)
            state["step"]._data += 1
            g = self._grad(param, grad_t._data, dev, weight_decay, maximize)
            square_avg = state["square_avg"]._data
            avg = self._buffer(1, param, dev)
            xp.multiply(square_avg, alpha, out=square_avg)
            xp.multiply(g, 1 - alpha, out=avg)
            xp.multiply(avg, g, out=avg)
            xp.add(square_avg, avg, out=square_avg)
            if centered:
                grad_avg = state["grad_avg"]._data
                xp.subtract(g, grad_avg, out=avg)
                if small:
                    xp.multiply(avg, w, out=avg)
                    xp.add(grad_avg, avg, out=grad_avg)
                else:
                    xp.multiply(avg, one_minus_w, out=avg)
                    xp.subtract(g, avg, out=grad_avg)
                xp.negative(grad_avg, out=avg)
                xp.multiply(avg, grad_avg, out=avg)
                xp.add(square_avg, avg, out=avg)
                xp.sqrt(avg, out=avg)
            else:
                xp.sqrt(square_avg, out=avg)
            xp.add(avg, eps, out=avg)
            if momentum > 0:
                buf = state["momentum_buffer"]._data
                xp.multiply(buf, momentum, out=buf)
                xp.divide(g, avg, out=avg)
                xp.add(buf, avg, out=buf)
                xp.multiply(buf, -lr, out=avg)
                xp.add(param, avg, out=param)
            else:
                # g is dead after this line, so slot 0 may hold the update even if g is there.
                update = self._buffer(0, param, dev)
                xp.multiply(g, -lr, out=update)
                xp.divide(update, avg, out=update)
                xp.add(param, update, out=param)
            bump(p)
