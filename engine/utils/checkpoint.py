"""Gradient checkpointing, as `torch.utils.checkpoint`: trade compute for activation memory.

`checkpoint(fn, *args)` runs `fn` under `no_grad`, so none of its intermediates is kept,
and records one node in its place. When backward reaches that node it re-runs `fn` with
gradients on, on detached copies of the inputs and with the default generator back at
the state it had in the forward (so dropout draws the same masks), backpropagates the
incoming gradients through that fresh graph, and hands the inputs' gradients on to the
outer backward. Parameters used inside `fn` get their gradients from that inner pass,
accumulating into `.grad` as usual. The default generator's stream is left where it was
before the recomputation, so a run with checkpointing draws the same numbers afterwards
as one without.

PyTorch's non-reentrant variant learns which parameters `fn` uses by recording a graph
in the forward; running under `no_grad` records nothing, so outputs require grad when an
input does or, failing that, when a parameter reachable from `fn` does (a Module, a
bound method's Module, a partial's arguments, closure cells and the globals `fn` names).
When neither holds, a warning says the outputs will get no gradient, as PyTorch's
reentrant variant warns.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from engine.autograd import (
    Node,
    enable_grad,
    is_grad_enabled,
    next_seq,
    no_grad,
    run_backward,
    save_versions,
)
from engine.random import default_generator
from engine.tensor import Tensor, wrap

__all__ = ["checkpoint", "checkpoint_sequential"]


def _flatten(obj: Any, out: list[Tensor]) -> None:
    """The tensors in obj, depth first, through tuples, lists and dicts."""
    if isinstance(obj, Tensor):
        out.append(obj)
    elif isinstance(obj, tuple | list):
        for item in obj:
            _flatten(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _flatten(item, out)


def _rebuild(obj: Any, tensors: Iterator[Tensor]) -> Any:
    """obj with its tensors replaced, in `_flatten`'s order, by the next ones from `tensors`."""
    if isinstance(obj, Tensor):
        return next(tensors)
    if isinstance(obj, list):
        return [_rebuild(item, tensors) for item in obj]
    if isinstance(obj, tuple):
        items = [_rebuild(item, tensors) for item in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)  # namedtuple
    if isinstance(obj, dict):
        return {k: _rebuild(v, tensors) for k, v in obj.items()}
    return obj


class _OutputGrads:
    """The gradients of a checkpoint's outputs by output index, summed as they arrive.

    Each output has its own node that passes its gradient on as one of these, so the
    backward pass's usual summing of a node's incoming gradients collects them all for
    the one function node.
    """

    __slots__ = ("grads",)

    def __init__(self, grads: dict[int, Any]) -> None:
        self.grads = grads

    def __add__(self, other: _OutputGrads) -> _OutputGrads:
        out = _OutputGrads(dict(self.grads))
        out += other
        return out

    def __iadd__(self, other: _OutputGrads) -> _OutputGrads:
        for k, g in other.grads.items():
            mine = self.grads.get(k)
            self.grads[k] = g if mine is None else mine + g
        return self


class CheckpointBackward(Node):
    """Output `index` of a checkpointed call: forwards its gradient to the function node."""

    def __init__(self, index: int) -> None:
        self.index = index

    def backward(self, gy: Any) -> tuple[Any, ...]:
        return (_OutputGrads({self.index: gy}),)


class CheckpointFunctionBackward(Node):
    """Re-runs the function with gradients on and backpropagates through the new graph."""

    saved: tuple[Any, ...] | None

    def backward(self, gy: _OutputGrads) -> tuple[Any, ...]:
        function, args, kwargs, rng_state, n_outputs = self.saved  # type: ignore[misc]
        inputs: list[Tensor] = []
        _flatten((args, kwargs), inputs)
        detached = []
        for t in inputs:
            d = t.detach()
            d._rg = t._rg
            detached.append(d)
        args, kwargs = _rebuild((args, kwargs), iter(detached))
        if rng_state is None:
            outputs = _run(function, args, kwargs)
        else:
            resume = default_generator.get_state()
            default_generator.set_state(rng_state)
            try:
                outputs = _run(function, args, kwargs)
            finally:
                default_generator.set_state(resume)
        recomputed: list[Tensor] = []
        _flatten(outputs, recomputed)
        if len(recomputed) != n_outputs:
            raise RuntimeError(
                f"checkpoint: the recomputed function returned {len(recomputed)} tensors, "
                f"the forward {n_outputs}; a checkpointed function must be deterministic"
            )
        roots, grads = [], []
        for k, g in gy.grads.items():
            out = recomputed[k]
            if out.shape != g.shape:
                raise RuntimeError(
                    f"checkpoint: recomputed output {k} has shape {out.shape}, the forward's "
                    f"had {g.shape}; a checkpointed function must be deterministic"
                )
            if out._rg:
                roots.append(out)
                grads.append(g)
        if roots:
            _backward_all(roots, grads)
        return tuple(d.grad._data if d.grad is not None else None for d in detached)


def _run(function: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    with enable_grad():
        return function(*args, **kwargs)


class _Roots(Node):
    """A stand-in root whose backward hands each recomputed output its gradient."""

    def __init__(self, grads: list[Any]) -> None:
        self.grads = tuple(grads)

    def backward(self, gy: Any) -> tuple[Any, ...]:
        return self.grads


def _backward_all(roots: list[Tensor], grads: list[Any]) -> None:
    """One backward pass from several tensors at once, so shared parts run once."""
    node = _Roots(grads)
    node.next = tuple((t._node or t) for t in roots)
    node.seq = next_seq()
    dev = roots[0]._device
    top = wrap(dev.xp.ones(()), dev)
    top._rg = True
    top._node = node
    run_backward(top, top._data, False)


def _reachable_tensors(obj: Any, depth: int, seen: set[int]) -> Iterator[Tensor]:
    """Tensors `obj` can reach as a Module, a container, or a function's closure and globals."""
    from engine.nn.module import Module

    if id(obj) in seen or depth < 0:
        return
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, Module):
        yield from obj.parameters()
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from _reachable_tensors(item, depth - 1, seen)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _reachable_tensors(item, depth - 1, seen)
    elif isinstance(obj, functools.partial):
        for item in (obj.func, *obj.args, *obj.keywords.values()):
            yield from _reachable_tensors(item, depth - 1, seen)
    elif callable(obj):
        owner = getattr(obj, "__self__", None)
        if owner is not None:
            yield from _reachable_tensors(owner, depth - 1, seen)
        func = getattr(obj, "__func__", obj)
        code = getattr(func, "__code__", None)
        if code is None:
            return
        for cell in getattr(func, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not yet filled
                continue
            yield from _reachable_tensors(value, depth - 1, seen)
        names = getattr(func, "__globals__", {})
        for name in code.co_names:
            if name in names:
                yield from _reachable_tensors(names[name], depth - 1, seen)


def checkpoint(
    function: Callable[..., Any],
    *args: Any,
    use_reentrant: bool = False,
    preserve_rng_state: bool = True,
    **kwargs: Any,
) -> Any:
    """`function(*args, **kwargs)` without keeping its intermediates; recomputed in backward.

    The outputs (a tensor, or tuples, lists and dicts of them) get gradients equal to
    those without checkpointing. `use_reentrant=True` follows PyTorch's reentrant
    variant: no keyword arguments, and outputs require grad only when a tensor argument
    does. With `preserve_rng_state` the recomputation draws the same random numbers.
    """
    if use_reentrant and kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    rng_state = default_generator.get_state() if preserve_rng_state else None
    with no_grad():
        outputs = function(*args, **kwargs)
    if not is_grad_enabled():
        return outputs
    inputs: list[Tensor] = []
    _flatten((args, kwargs), inputs)
    if not any(t._rg for t in inputs) and (
        use_reentrant
        or not any(t._rg for t in _reachable_tensors((function, args, kwargs), 4, set()))
    ):
        warnings.warn(
            "checkpoint: none of the inputs (nor any parameter reachable from the function) "
            "requires grad, so its outputs will not; gradients will be None",
            stacklevel=2,
        )
        return outputs
    produced: list[Tensor] = []
    _flatten(outputs, produced)
    node = CheckpointFunctionBackward()
    node.saved = (function, args, kwargs, rng_state, len(produced))
    node.next = tuple([(t._node or t) if t._rg else None for t in inputs])
    node.seq = next_seq()
    # an input changed in place before backward would make the recomputation wrong
    save_versions(node, *inputs)
    marked = []
    for k, t in enumerate(produced):
        if not t.is_floating_point():
            marked.append(t)
            continue
        out = wrap(t._data, t._device)
        out_node = CheckpointBackward(k)
        out_node.next = (node,)
        out_node.seq = next_seq()
        out._rg = True
        out._node = out_node
        marked.append(out)
    return _rebuild(outputs, iter(marked))


def checkpoint_sequential(
    functions: Sequence[Callable[[Any], Any]] | Any,
    segments: int,
    input: Any,
    use_reentrant: bool = False,
    **kwargs: Any,
) -> Any:
    """Run `functions` in order on `input`, checkpointing all but the last of `segments`
    segments, as PyTorch's (a `Sequential` stands for its children)."""
    from engine.nn.containers import Sequential

    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    if isinstance(functions, Sequential):
        functions = list(functions.children())
    functions = list(functions)

    def run_function(start: int, end: int) -> Callable[[Any], Any]:
        def forward(x: Any) -> Any:
            for j in range(start, end + 1):
                x = functions[j](x)
            return x

        return forward

    segment_size = len(functions) // segments
    end = -1
    for start in range(0, segment_size * (segments - 1), segment_size):
        end = start + segment_size - 1
        input = checkpoint(
            run_function(start, end),
            input,
            use_reentrant=use_reentrant,
            preserve_rng_state=preserve,
        )
    return run_function(end + 1, len(functions) - 1)(input)
