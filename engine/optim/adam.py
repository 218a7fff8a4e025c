"""`Adam` (with AMSGrad) and `AdamW`, following PyTorch's single-tensor update."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from engine.optim.optimizer import Optimizer, bump, check_lr, step_tensor, zeros_state


class Adam(Optimizer):
    """Adam, op for op as PyTorch's for-loop implementation:

        step += 1; g = grad (+ weight_decay * p, or p *= 1 - lr * weight_decay when
        decoupled); exp_avg.lerp_(g, 1 - beta1); exp_avg_sq = beta2 * exp_avg_sq +
        (1 - beta2) * g * g; denom = sqrt(exp_avg_sq or its running max) /
        sqrt(1 - beta2**step) + eps; p -= lr / (1 - beta1**step) * exp_avg / denom

    with the bias corrections in float64 on the host from the CPU `step`, so a step never
    reads anything back from a GPU. `foreach`, `capturable`, `differentiable` and `fused`
    are accepted so that groups and state dicts carry PyTorch's keys; the update is the
    same whatever they say.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_lr(lr)
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        weight_decay = group["weight_decay"]
        amsgrad = group["amsgrad"]
        maximize = group["maximize"]
        decoupled = group["decoupled_weight_decay"]
        # PyTorch's lerp takes its weight in float32 and, for weights of 0.5 and more,
        # interpolates from the far end for accuracy.
        w = np.float32(1 - beta1)
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
                state["exp_avg"] = zeros_state(p)
                state["exp_avg_sq"] = zeros_state(p)
                if amsgrad:
                    state["max_exp_avg_sq"] = zeros_state(p)
            step_arr = state["step"]._data
            step_arr += 1
            step = float(step_arr)
            if weight_decay != 0 and decoupled:
                xp.multiply(param, 1 - lr * weight_decay, out=param)
                g = self._grad(param, grad_t._data, dev, 0, maximize)
            else:
                g = self._grad(param, grad_t._data, dev, weight_decay, maximize)
            exp_avg = state["exp_avg"]._data
            exp_avg_sq = state["exp_avg_sq"]._data
            t = self._buffer(1, param, dev)
            xp.subtract(g, exp_avg, out=t)
            if small:
                xp.multiply(t, w, out=t)
                xp.add(exp_avg, t, out=exp_avg)
            else:
                xp.multiply(t, one_minus_w, out=t)
                xp.subtract(g, t, out=exp_avg)
            xp.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
            xp.multiply(g, 1 - beta2, out=t)
            xp.multiply(t, g, out=t)
            xp.add(exp_avg_sq, t, out=exp_avg_sq)

            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            step_size = lr / bias_correction1
            if amsgrad:
                source = state["max_exp_avg_sq"]._data
                xp.maximum(source, exp_avg_sq, out=source)
            else:
                source = exp_avg_sq
            denom = t
            xp.sqrt(source, out=denom)
            xp.divide(denom, bias_correction2_sqrt, out=denom)
            xp.add(denom, eps, out=denom)
            # g is dead here, so slot 0 may hold the update even when g lives in it.
            update = self._buffer(0, param, dev)
            xp.multiply(exp_avg, -step_size, out=update)
            xp.divide(update, denom, out=update)
            xp.add(param, update, out=param)
            bump(p)


class AdamW(Adam):
    """Adam with decoupled weight decay (`p *= 1 - lr * weight_decay` before the moment
    updates), PyTorch's AdamW: default weight_decay 1e-2."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As Adam's, but every group keeps decoupled weight decay, as PyTorch's AdamW."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
