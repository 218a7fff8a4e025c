"""`SGD` with momentum, dampening, Nesterov momentum and weight decay, as PyTorch's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.optim.optimizer import Optimizer, bump, check_lr
from engine.tensor import wrap


class SGD(Optimizer):
    """Stochastic gradient descent, following PyTorch's single-tensor update op for op:
    `g = grad (+ weight_decay * p)`; with momentum, `buf = momentum * buf + (1 - dampening)
    * g` (the first step's buffer is a clone of g) and `g = g + momentum * buf` (Nesterov)
    or `g = buf`; then `p -= lr * g`. `foreach`, `differentiable` and `fused` exist so that
    param groups and state dicts have PyTorch's keys; the update is the same whatever
    they say.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        momentum = group["momentum"]
        dampening = group["dampening"]
        weight_decay = group["weight_decay"]
        nesterov = group["nesterov"]
        maximize = group["maximize"]
        state_of = self.state
        for p in group["params"]:
            grad_t = p.grad
            if grad_t is None:
                continue
            dev = p._device
            xp = dev.xp
            param = p._data
            g = self._grad(param, grad_t._data, dev, weight_decay, maximize)
            out = self._buffer(1, param, dev)
            if momentum != 0:
                state = state_of[p]
                buf_t = state.get("momentum_buffer")
                if buf_t is None:
                    buf = g.copy()
                    state["momentum_buffer"] = wrap(buf, dev)
                else:
                    buf = buf_t._data
                    xp.multiply(buf, momentum, out=buf)
                    if dampening != 0:
                        xp.multiply(g, 1 - dampening, out=out)
                        xp.add(buf, out, out=buf)
                    else:
                        xp.add(buf, g, out=buf)
                if nesterov:
                    xp.multiply(buf, momentum, out=out)
                    xp.add(g, out, out=out)
                    g = out
                else:
                    g = buf
            xp.multiply(g, -lr, out=out)
            xp.add(param, out, out=param)
            bump(p)
