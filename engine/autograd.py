"""Reverse-mode autograd: grad mode, graph nodes and the backward pass.

Following Chainer's FunctionNode: every op that needs a gradient records one `Node`
holding edges to where its inputs' gradients go (the producing node, the leaf tensor
itself, or None) and only the arrays its backward uses. Backward walks nodes from a
heap, newest first, so a node runs after every consumer of its output has delivered its
gradient; those gradients are summed once. Without `retain_graph` each node drops its
saved arrays as soon as it has run.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from engine.tensor import Tensor

F = TypeVar("F", bound=Callable[..., Any])


class _GradMode(threading.local):
    # Thread-local as PyTorch's: a DataLoader thread under no_grad must not switch off
    # gradients for the training thread.
    enabled = True


grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    return grad_mode.enabled


class _GradModeContext:
    """A context manager that is also a decorator, with or without parentheses."""

    mode: bool

    def __new__(cls, func: Callable[..., Any] | None = None):
        self = super().__new__(cls)
        if func is None:
            return self
        return self(func)

    def __enter__(self) -> None:
        self._prev = grad_mode.enabled
        grad_mode.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        grad_mode.enabled = self._prev

    def __call__(self, func: F) -> F:
        cls = type(self)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with cls():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class no_grad(_GradModeContext):
    """Ops inside record no graph; in-place ops on tensors that require grad are allowed."""

    mode = False


class enable_grad(_GradModeContext):
    mode = True


class set_grad_enabled(_GradModeContext):
    def __new__(cls, mode: bool):
        self = object.__new__(cls)
        self.mode = bool(mode)
        # Like PyTorch, it takes effect as a plain call too; leaving a `with` block (or
        # using it as a decorator) restores the mode from before the call.
        self._prev = grad_mode.enabled
        grad_mode.enabled = self.mode
        return self

    def __enter__(self) -> None:
        grad_mode.enabled = self.mode

    def __call__(self, func: F) -> F:
        grad_mode.enabled = self._prev
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prev = grad_mode.enabled
            grad_mode.enabled = mode
            try:
                return func(*args, **kwargs)
            finally:
                grad_mode.enabled = prev

        return wrapper  # type: ignore[return-value]


_seq = itertools.count()


class Node:
    """One recorded op. Subclasses define `backward(gy) -> tuple` of input gradients.

    `next[i]` is where input i's gradient goes: a Node, a leaf Tensor, or None when that
    input needs none (backward may then return None in that place). `saved` holds the
    arrays backward reads; it becomes None once freed. `_vcs`/`_vs` are the version
    counters of the tensors behind `saved` and their values when saved.
    """

    saved: tuple[Any, ...] | None = ()
    _vcs: list[list[int]] | None = None
    _vs: list[int] | None = None
    _pre_hooks: dict[int, Callable[..., Any]] | None = None
    _hook_device: Any = None
    next: tuple[Any, ...]
    seq: int

    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.name()}>"

    @property
    def next_functions(self) -> tuple[tuple[Any, int], ...]:
        return tuple((n, 0) for n in self.next)

    def backward(self, gy: Any) -> tuple[Any, ...]:
        raise TypeError(f"{self.name()} defines no backward")


def counter(t: Tensor) -> list[int]:
    """t's version counter, created on first need; views share it with their base."""
    vc = t._vc
    if vc is None:
        vc = t._vc = [0]
    return vc


def save_versions(node: Node, *tensors: Tensor) -> None:
    """Remember the versions of the tensors whose arrays `node` saved."""
    vcs = []
    for t in tensors:
        vc = t._vc
        if vc is None:
            vc = t._vc = [0]
        vcs.append(vc)
    node._vcs = vcs
    node._vs = [vc[0] for vc in vcs]


def _check_versions(node: Node) -> None:
    for vc, v in zip(node._vcs, node._vs):  # type: ignore[arg-type]  # noqa: B905
        if vc[0] != v:
            raise RuntimeError(
                f"one of the tensors needed for gradient computation by {node.name()} has "
                f"been modified by an in-place operation (it is at version {vc[0]}, expected "
                f"{v}); compute the in-place change on a clone instead"
            )


def _sum(grads: list[Any]) -> Any:
    total = grads[0] + grads[1]
    for g in grads[2:]:
        total += g
    return total


def _owned(g: Any, given: set[int]) -> Any:
    """g itself where nobody else holds it, else a copy: a leaf's .grad must not alias."""
    if isinstance(g, np.generic):
        g = np.array(g)  # a NumPy scalar is immutable; .grad must take += later
    elif g.base is not None or id(g) in given:
        g = g.copy()
    given.add(id(g))
    return g


_wrap: Callable[[Any, Any], Tensor] | None = None


def _tensor(g: Any, device: Any) -> Tensor:
    global _wrap
    if _wrap is None:  # engine.tensor imports this module, so bind its constructor late
        from engine.tensor import wrap as _wrap
    return _wrap(g, device)


def _run_hooks(hooks: dict[int, Callable[..., Any]], g: Any, device: Any, given: set[int]) -> Any:
    # A hook may keep the tensor it is shown, or return one the caller holds: a leaf's
    # .grad must alias neither, so every array that went through a hook counts as given.
    for fn in list(hooks.values()):
        given.add(id(g))
        out = fn(_tensor(g, device))
        if out is not None:
            g = out._data
    given.add(id(g))
    return g


def _accumulate(leaf: Tensor, g: Any, given: set[int]) -> None:
    if leaf._hooks:
        g = _run_hooks(leaf._hooks, g, leaf._device, given)
    data = leaf._data
    if g.dtype != data.dtype:
        g = g.astype(data.dtype)
    current = leaf.grad
    if current is None:
        leaf.grad = _tensor(_owned(g, given), leaf._device)
    else:
        current._data += g


def run_backward(root: Tensor, gy: Any, retain_graph: bool) -> None:
    """Backpropagate `gy` (an array shaped like root) through root's graph."""
    given = {id(gy)}  # the caller's array is theirs: never hand it to a leaf as is
    start = root._node
    if start is None:
        _accumulate(root, gy, given)
        return
    pending: dict[Node, list[Any]] = {start: [gy]}
    heap: list[tuple[int, Node]] = [(-start.seq, start)]
    leaves: dict[Tensor, list[Any]] = {}
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        node = pop(heap)[1]
        grads = pending.pop(node)
        g = grads[0] if len(grads) == 1 else _sum(grads)
        if node._pre_hooks:
            g = _run_hooks(node._pre_hooks, g, node._hook_device, given)
        saved = node.saved
        if saved is None:
            raise RuntimeError(
                f"trying to backward through the graph a second time: {node.name()} has "
                "already freed what its backward needs; call backward(retain_graph=True) "
                "the first time if you need to backward twice"
            )
        if node._vcs is not None:
            _check_versions(node)
        input_grads = node.backward(g)
        if saved and not retain_graph:
            node.saved = None
        for target, ig in zip(node.next, input_grads):  # noqa: B905  (hot loop)
            if target is None or ig is None:
                continue
            if isinstance(target, Node):
                acc = pending.get(target)
                if acc is None:
                    pending[target] = [ig]
                    push(heap, (-target.seq, target))
                else:
                    acc.append(ig)
            else:
                acc = leaves.get(target)
                if acc is None:
                    leaves[target] = [ig]
                else:
                    acc.append(ig)
    for leaf, grads in leaves.items():
        _accumulate(leaf, grads[0] if len(grads) == 1 else _sum(grads), given)


def next_seq() -> int:
    return next(_seq)
