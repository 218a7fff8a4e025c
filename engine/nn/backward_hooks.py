"""Full backward hooks: hook(module, grad_input, grad_output) with every gradient at once.

The engine's nodes have one output each, so a module call's inputs (and outputs) pass
through a *group*: one `GroupNode` plus one `PortNode` per tensor. Each port stores the
gradient of its tensor in the group's slots and hands the group a placeholder; the group
node was created before its ports, so the backward heap (newest first) runs it after all
of them, with every slot filled. For the inputs' group that is where the hook runs and
where it may replace grad_input, before anything flows on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.autograd import Node, grad_mode, next_seq
from engine.tensor import Tensor, wrap


class GroupNode(Node):
    def __init__(self, size: int, on_grads: Callable[[list[Any]], list[Any]]) -> None:
        self.slots: list[Any] = [None] * size
        self.on_grads = on_grads

    def backward(self, placeholder: Any) -> tuple[Any, ...]:
        grads, self.slots = self.slots, [None] * len(self.slots)
        return tuple(self.on_grads(grads))


class PortNode(Node):
    def __init__(self, group: GroupNode, index: int) -> None:
        self.group = group
        self.index = index

    def backward(self, gy: Any) -> tuple[Any]:
        slots = self.group.slots
        slots[self.index] = gy if slots[self.index] is None else slots[self.index] + gy
        return (0.0,)  # a placeholder that schedules the group node; its value is unused


def through_group(
    tensors: list[Tensor], on_grads: Callable[[list[Any]], list[Any]]
) -> list[Tensor]:
    """Identity on `tensors` (those requiring grad), with their gradients delivered together."""
    group = GroupNode(len(tensors), on_grads)
    group.next = tuple((t._node or t) if t._rg else None for t in tensors)
    group.seq = next_seq()
    out = []
    for i, t in enumerate(tensors):
        port = PortNode(group, i)
        port.next = (group,)
        port.seq = next_seq()
        y = wrap(t._data, t._device)
        y._vc = t._vc
        y._rg = True
        y._node = port
        out.append(y)
    return out


class BackwardHookCall:
    """One hooked call of a module: wraps its inputs and outputs, runs the hooks."""

    def __init__(self, module: Any, hooks: list[Callable[..., Any]]) -> None:
        self.module = module
        self.hooks = hooks
        self.grad_output: tuple[Any, ...] = ()
        self.input_devices: list[Any] = []

    def wrap_inputs(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not grad_mode.enabled:
            return args
        picks = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a._rg]
        if not picks:
            return args
        self.input_devices = [args[i]._device for i in picks]
        wrapped = through_group([args[i] for i in picks], self._on_input_grads)
        out = list(args)
        for i, w in zip(picks, wrapped, strict=True):
            out[i] = w
        return tuple(out)

    def wrap_outputs(self, out: Any) -> Any:
        if not grad_mode.enabled:
            return out
        outs = out if isinstance(out, tuple) else (out,)
        picks = [i for i, o in enumerate(outs) if isinstance(o, Tensor) and o._rg]
        if not picks:
            return out
        devices = [outs[i]._device for i in picks]

        def on_output_grads(grads: list[Any]) -> list[Any]:
            self.grad_output = tuple(
                None if g is None else wrap(g, d) for g, d in zip(grads, devices, strict=True)
            )
            return grads

        wrapped = through_group([outs[i] for i in picks], on_output_grads)
        result = list(outs)
        for i, w in zip(picks, wrapped, strict=True):
            result[i] = w
        return tuple(result) if isinstance(out, tuple) else result[0]

    def _on_input_grads(self, grads: list[Any]) -> list[Any]:
        grad_input = tuple(
            None if g is None else wrap(g, d)
            for g, d in zip(grads, self.input_devices, strict=True)
        )
        for hook in self.hooks:
            result = hook(self.module, grad_input, self.grad_output)
            if result is not None:
                result = tuple(result) if isinstance(result, tuple | list) else (result,)
                if len(result) != len(grad_input):
                    raise RuntimeError(
                        f"backward hook returned {len(result)} gradients for "
                        f"{len(grad_input)} inputs"
                    )
                grad_input = result
        return [None if g is None else g._data for g in grad_input]
