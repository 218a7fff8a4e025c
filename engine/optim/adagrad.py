"""`Adagrad`, following PyTorch's single-tensor update."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.optim.optimizer import (
    Optimizer,
    advance_step,
    bump,
    check_lr,
    step_tensor,
    zeros_state,
)


class Adagrad(Optimizer):
    """Adagrad, op for op as PyTorch's for-loop implementation:

        step += 1; g = grad (+ weight_decay * p); clr = lr / (1 + (step - 1) * lr_decay);
        sum += g * g; p -= clr * g / (sqrt(sum) + eps)

    As in PyTorch, every parameter's state (`step`, `sum` filled with
    initial_accumulator_value) exists from construction on, gradient or not.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not lr_decay >= 0.0:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not initial_accumulator_value >= 0.0:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}"
            )
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As Optimizer's, creating the new parameters' state at once (see the class doc)."""
        super().add_param_group(param_group)
        for p in param_group["params"]:
            state = self.state[p]
            state["step"] = step_tensor()
            state["sum"] = zeros_state(p, param_group["initial_accumulator_value"])

    def _step_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        lr_decay = group["lr_decay"]
        eps = group["eps"]
        weight_decay = group["weight_decay"]
        maximize = group["maximize"]
        state_of = self.state
        for p in group["params"]:
            grad_t = p.grad
            if grad_t is None:
                continue
            dev = p._device
            xp = dev.xp
            param = p._data
            state = state_of[p]
            clr = lr / (1 + (advance_step(state) - 1) * lr_decay)
            g = self._grad(param, grad_t._data, dev, weight_decay, maximize)
            state_sum = state["sum"]._data
            std = self._buffer(1, param, dev)
            xp.multiply(g, g, out=std)
            xp.add(state_sum, std, out=state_sum)
            xp.sqrt(state_sum, out=std)
            xp.add(std, eps, out=std)
            # g is dead after this line, so slot 0 may hold the update even if g is there.
            update = self._buffer(0, param, dev)
            xp.multiply(g, -clr, out=update)
            xp.divide(update, std, out=update)
            xp.add(param, update, out=param)
            bump(p)
