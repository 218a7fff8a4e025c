"""`Adam` (with AMSGrad) and `AdamW`, following PyTorch's single-tensor update."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from engine.backends.numpy_ops import adam_moments
from engine.optim.optimizer import (
    Optimizer,
    advance_step,
    bump,
    check_lr,
    step_tensor,
    zeros_state,
)
from engine.tensor import wrap


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
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        c = _Consts(group)
        for p in params:
            if not self.state[p]:
                self.state[p].update(
                    step=step_tensor(),
                    exp_avg=zeros_state(p),
                    exp_avg_sq=zeros_state(p),
                    **({"max_exp_avg_sq": zeros_state(p)} if c.amsgrad else {}),
                )
        # Flat only where per-call overhead dominates: for big tensors concatenating the
        # gradients is an extra pass over memory that the loop does not make.
        small = sum(p._data.size for p in params) <= _FLAT_MAX
        # On CUDA the flat update is one fused kernel that gathers nothing: always worth it.
        flat = params[0]._device.type == "cuda" or (len(params) > 1 and small)
        if flat and self._flat_step(group, params, c):
            return
        for p in params:
            state = self.state[p]
            step = advance_step(state)
            dev = p._device
            xp = dev.xp
            param = p._data
            if c.weight_decay != 0 and c.decoupled:
                xp.multiply(param, 1 - c.lr * c.weight_decay, out=param)
                g = self._grad(param, p.grad._data, dev, 0, c.maximize)
            else:
                g = self._grad(param, p.grad._data, dev, c.weight_decay, c.maximize)
            update = adam_moments(
                xp,
                c,
                step,
                g,
                state["exp_avg"]._data,
                state["exp_avg_sq"]._data,
                state["max_exp_avg_sq"]._data if c.amsgrad else None,
                self._buffer(1, param, dev),
                self._buffer(0, param, dev),
            )
            xp.add(param, update, out=param)
            bump(p)

    def _flat_step(self, group: dict[str, Any], params: list[Any], c: _Consts) -> bool:
        """The same update over the whole group at once, in flat buffers whose
        per-parameter views are the state tensors: a dozen ufunc calls for the model
        instead of a dozen per parameter, which is what decides small models. False when
        the group does not allow it (mixed devices or dtypes, parameters at different
        steps); the per-parameter loop then runs."""
        dev, dtype = params[0]._device, params[0]._data.dtype
        if any(p._device is not dev or p._data.dtype != dtype for p in params):
            return False
        states = [self.state[p] for p in params]
        if len({float(s["step"]._data) for s in states}) != 1:
            return False
        names = (
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if c.amsgrad else ("exp_avg", "exp_avg_sq")
        )
        flats = [self._flat_buffer(params, states, name, dev) for name in names]
        step = 0.0
        for s in states:
            step = advance_step(s)
        dev.ops.adam_update(
            [p._data for p in params],
            [p.grad._data for p in params],
            flats[0],
            flats[1],
            flats[2] if c.amsgrad else None,
            c,
            step,
            lambda like: self._buffer(1, like, dev),
        )
        for p in params:
            bump(p)
        return True

    def _flat_buffer(
        self, params: list[Any], states: list[dict[str, Any]], name: str, dev: Any
    ) -> Any:
        """The flat array behind every parameter's `state[name]`, made (values copied in)
        on first use or when a state tensor is no longer a view of it (load_state_dict)."""
        views = [s[name]._data for s in states]
        flat = views[0].base
        if (
            flat is not None
            and flat.ndim == 1
            and flat.size == sum(v.size for v in views)
            and all(v.base is flat for v in views)
        ):
            return flat
        flat = dev.xp.concatenate([v.reshape(-1) for v in views])
        start = 0
        for p, s in zip(params, states, strict=True):
            n = p._data.size
            s[name] = wrap(flat[start : start + n].reshape(p._data.shape), dev)
            start += n
        return flat


_FLAT_MAX = 1 << 20


class _Consts:
    """A group's options, read once per step."""

    def __init__(self, group: dict[str, Any]) -> None:
        self.lr = group["lr"]
        self.beta1, self.beta2 = group["betas"]
        self.eps = group["eps"]
        self.weight_decay = group["weight_decay"]
        self.amsgrad = group["amsgrad"]
        self.maximize = group["maximize"]
        self.decoupled = group["decoupled_weight_decay"]
        # PyTorch's lerp takes its weight in float32 and, for weights of 0.5 and more,
        # interpolates from the far end for accuracy.
        self.w = np.float32(1 - self.beta1)
        self.small = abs(self.w) < 0.5
        self.one_minus_w = float(np.float32(1) - self.w)


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
