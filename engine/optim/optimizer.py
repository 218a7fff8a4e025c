"""`Optimizer`: parameter groups, per-parameter state and PyTorch's `state_dict` layout.

Subclasses implement `_step_group(group)`, which updates the arrays behind the
parameters and their state in place with the device's array module (NumPy or CuPy):
one ufunc call per PyTorch op, written into the parameter, the state or a reusable
scratch buffer, so once the state exists a step allocates nothing and costs a few
microseconds of Python per parameter. State tensors are engine tensors whose arrays
change in place, so `state_dict()` hands out live tensors exactly as PyTorch's does.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import numpy as np

from engine.autograd import counter, enable_grad, no_grad
from engine.device import CPU, device
from engine.tensor import Tensor, wrap


class _RequiredParameter:
    """The default of an option every param group must set (SGD's lr in old PyTorch)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def step_tensor(value: float = 0.0) -> Tensor:
    """PyTorch 2.x's `state["step"]`: a 0-d float32 tensor kept on the CPU for any device,
    so reading it for the bias corrections never waits for a GPU."""
    return wrap(np.array(value, dtype=np.float32), CPU)


def advance_step(state: dict[str, Any]) -> float:
    """Count one more step in state["step"] (on the CPU: reading it never waits on a GPU)
    and return the new count."""
    step_arr = state["step"]._data
    step_arr += 1
    return float(step_arr)


def zeros_state(p: Tensor, fill: float = 0.0) -> Tensor:
    """A state tensor shaped like p, on p's device and in p's dtype."""
    xp = p._device.xp
    data = xp.zeros_like(p._data) if fill == 0 else xp.full_like(p._data, fill)
    return wrap(data, p._device)


def bump(p: Tensor) -> None:
    """Record an in-place change of p, so a graph that saved p refuses to backward."""
    counter(p)[0] += 1


def check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor):
        raise TypeError("lr: a Tensor learning rate is not supported; pass a Python float")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


class Optimizer:
    """Base class of every optimizer, with PyTorch's `torch.optim.Optimizer` interface.

    `params` is an iterable of tensors, of `(name, tensor)` pairs, or of dicts (parameter
    groups, each a `params` list plus options that override `defaults`).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        if defaults.get("differentiable"):
            raise NotImplementedError(
                "differentiable=True is not supported: the engine's optimizers update "
                "parameters in place, outside autograd"
            )
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors "
                f"or dicts, but got {type(params).__name__}"
            )
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        # Scratch arrays for intermediate results, keyed by (slot, dtype, device) and
        # grown to the largest parameter: reused by every parameter, never saved.
        self._scratch: dict[tuple[int, Any, device], Any] = {}
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"

    # ---- parameter groups -----------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group; options it leaves out take the optimizer's defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs. Please use a list "
                "instead."
            )
        tensors, names = [], []
        for item in params:
            if isinstance(item, tuple):
                names.append(item[0])
                tensors.append(item[1])
            else:
                tensors.append(item)
        if names:
            if len(names) != len(tensors):
                raise ValueError(
                    "all optimizer params should be with/without names. Some param names "
                    "are missing"
                )
            param_group["param_names"] = names
        param_group["params"] = tensors
        for p in tensors:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but one of the params is "
                    f"{type(p).__module__}.{type(p).__name__}"
                )
            if not p.is_leaf:
                raise ValueError(
                    "can't optimize a non-leaf Tensor (it was computed from other tensors); "
                    "optimize the leaf it came from, or detach() it and set requires_grad"
                )
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(
                    "parameter group didn't specify a value of required optimization "
                    f"parameter {name}"
                )
            param_group.setdefault(name, default)
        if len(tensors) != len(set(tensors)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, "
                "this will cause an error; see github.com/pytorch/pytorch/issues/40967 for "
                "more information",
                stacklevel=3,
            )
        seen: set[Tensor] = set()
        for group in self.param_groups:
            seen.update(group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. cannot add "
                    f"param group {which} to the optimizer"
                )
        if not seen.isdisjoint(tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # ---- gradients and steps ----------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every parameter's gradient (or zero it in place with set_to_none=False)."""
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    g.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns the closure's loss.

        The closure (which should zero the gradients, recompute the loss and backward it)
        runs with gradients enabled even when step is called under no_grad.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    def _buffer(self, slot: int, like: Any, dev: device) -> Any:
        """A scratch array shaped like `like`; each slot is one independent buffer."""
        key = (slot, like.dtype, dev)
        buf = self._scratch.get(key)
        n = like.size
        if buf is None or buf.size < n:
            buf = self._scratch[key] = dev.xp.empty(n, dtype=like.dtype)
        return buf[:n].reshape(like.shape)

    def _grad(self, param: Any, grad: Any, dev: device, weight_decay: float, maximize: bool) -> Any:
        """The gradient an update uses: negated to maximize, plus `weight_decay * param`
        (coupled L2, PyTorch's `grad.add(param, alpha=weight_decay)`). A changed gradient
        lives in scratch slot 0; `.grad` itself is never written."""
        xp = dev.xp
        if weight_decay != 0:
            g = self._buffer(0, param, dev)
            xp.multiply(param, weight_decay, out=g)
            (xp.subtract if maximize else xp.add)(g, grad, out=g)
            return g
        if maximize:
            g = self._buffer(0, grad, dev)
            xp.negative(grad, out=g)
            return g
        return grad

    # ---- state dict -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: `state` keyed by each parameter's index in group order, and
        `param_groups` as option dicts whose `params` are those indices.

        The state tensors are the live ones, as PyTorch's: deep-copy the dict (or save it)
        to keep a snapshot.
        """
        index: dict[int, int] = {}
        start = 0
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                index.setdefault(id(p), i)
            packed["params"] = [index[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {(index[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a dict from `state_dict()` (this engine's or PyTorch's, tensors converted).

        State tensors are copied onto each parameter's device and, when floating-point,
        into its dtype; `step` stays a float32 CPU tensor, as PyTorch keeps it. Unlike
        PyTorch, the loaded state never aliases the dict's tensors, so loading one dict
        into two optimizers gives two independent ones.
        """
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"loaded state dict has a different number of parameter groups "
                f"({len(saved_groups)}) than the optimizer ({len(groups)})"
            )
        for i, (g, s) in enumerate(zip(groups, saved_groups, strict=True)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group that doesn't match the "
                    f"size of optimizer's group: group {i} has {len(s['params'])} parameters "
                    f"in the state dict and {len(g['params'])} in the optimizer"
                )
        id_map = dict(
            zip(
                chain.from_iterable(s["params"] for s in saved_groups),
                chain.from_iterable(g["params"] for g in groups),
                strict=True,
            )
        )
        state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            p = id_map.get(k)
            if p is None:
                state[k] = copy.deepcopy(v)
                continue
            state[p] = {name: _cast(p, k, name, value) for name, value in v.items()}
        new_groups = []
        for g, s in zip(groups, saved_groups, strict=True):
            s["params"] = g["params"]
            if "param_names" in g and "param_names" not in s:
                s["param_names"] = g["param_names"]
            for name, default in self.defaults.items():
                s.setdefault(name, default)
            new_groups.append(s)
        self.state = state
        self.param_groups = new_groups


def _cast(p: Tensor, index: int, name: str, value: Any) -> Any:
    if name == "step":
        if isinstance(value, Tensor):
            return step_tensor(float(value.detach().cpu()._data))
        return step_tensor(float(value))
    if not isinstance(value, Tensor):
        return copy.deepcopy(value)
    if value.ndim > 0 and value.shape != p.shape:
        raise ValueError(
            f"loaded state dict's state[{index}][{name!r}] has shape {tuple(value.shape)}, "
            f"but parameter {index} has shape {tuple(p.shape)}"
        )
    value = value.detach()
    if p.is_floating_point():
        return value.to(dtype=p.dtype, device=p.device, copy=True)
    return value.to(device=p.device, copy=True)
