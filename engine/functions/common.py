"""What the ops share: operand coercion with PyTorch's promotion, dims, gradient reduction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import dtypes
from engine.autograd import Node, grad_mode, next_seq
from engine.errors import DeviceError, ShapeError
from engine.tensor import Tensor, wrap

SCALARS = (int, float, bool)


def check_device(op: str, a: Tensor, b: Tensor) -> None:
    if a._device is not b._device:
        raise DeviceError(
            f"{op}: expected all tensors on the same device, got {a._device} "
            f"(shape {a.shape}) and {b._device} (shape {b.shape})"
        )


def shape_error(op: str, *shapes: Any) -> ShapeError:
    return ShapeError(
        f"{op}: shapes " + " and ".join(str(tuple(s)) for s in shapes) + " do not match"
    )


def as_operand(op: str, a: Tensor, b: Any) -> Any:
    """b as something an op can pair with tensor a: a same-device Tensor or a Python scalar.

    Returns None for a type no op takes, so dunders can answer NotImplemented.
    """
    if isinstance(b, Tensor):
        check_device(op, a, b)
        return b
    if isinstance(b, SCALARS):
        return b
    if isinstance(b, np.generic):
        return b.item()
    if isinstance(b, np.ndarray):
        return wrap(a._device.ops.from_host(b), a._device)
    return None


def cast(t: Tensor, d: dtypes.dtype) -> Tensor:
    """t in dtype d, differentiably (the gradient goes back in t's dtype)."""
    if t._data.dtype == d.np:
        return t
    from engine.functions.convert import to_dtype

    return to_dtype(t, d)


def promote_pair(a: Tensor, b: Any) -> tuple[Tensor, Any]:
    """a and b cast to PyTorch's result type; b may be a Python scalar, which stays one."""
    ad = a.dtype
    if isinstance(b, Tensor):
        rd = dtypes.promote_dim(ad, a._data.ndim, b.dtype, b._data.ndim)
        return cast(a, rd), cast(b, rd)
    rd = dtypes.with_scalar(ad, b)
    return cast(a, rd), b


def to_float(t: Tensor) -> Tensor:
    """Integer and bool tensors promoted to the default float, as PyTorch's float ops do."""
    if t._data.dtype.kind in "biu":
        return cast(t, dtypes.get_default_dtype())
    return t


def record(node: Node, out: Tensor, *inputs: Tensor) -> Tensor:
    """Make `node` the creator of `out` when any input requires grad and grad mode is on."""
    node.next = tuple([(t._node or t) if t._rg else None for t in inputs])
    node.seq = next_seq()
    out._rg = True
    out._node = node
    return out


def needs_grad(*inputs: Any) -> bool:
    return grad_mode.enabled and any(isinstance(t, Tensor) and t._rg for t in inputs)


def unbroadcast(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum g over the dims that broadcasting added or stretched, back to `shape`."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1
    )
    if axes:
        g = g.sum(axis=axes)
    return g.reshape(shape)


def norm_dim(d: int, ndim: int, op: str) -> int:
    n = max(ndim, 1)
    if not isinstance(d, int | np.integer) or isinstance(d, bool):
        raise TypeError(f"{op}: dim must be an int, got {d!r}")
    if not -n <= d < n:
        raise IndexError(
            f"{op}: dimension out of range (expected to be in range of [{-n}, {n - 1}], "
            f"but got {d})"
        )
    return int(d) % n


def norm_dims(dim: int | Sequence[int] | None, ndim: int, op: str) -> tuple[int, ...]:
    """Reduction dims as a sorted tuple of non-negative ints; None means all."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int | np.integer):
        dims = (norm_dim(dim, ndim, op),)
    else:
        dims = tuple(norm_dim(d, ndim, op) for d in dim)
        if len(set(dims)) != len(dims):
            raise RuntimeError(f"{op}: dim {tuple(dim)} names a dimension twice")
        if not dims:  # PyTorch: an empty dim list reduces over everything
            return tuple(range(ndim))
    if ndim == 0:
        return ()
    return tuple(sorted(dims))


def parse_size(op: str, size: tuple[Any, ...]) -> tuple[int, ...]:
    """`f(2, 3)` and `f((2, 3))` alike, as PyTorch's factories and reshape take them."""
    if len(size) == 1 and isinstance(size[0], list | tuple):
        size = tuple(size[0])
    try:
        out = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: size must be ints, got {size!r}") from None
    return out


def xp_of(t: Tensor) -> Any:
    return t._device.xp
