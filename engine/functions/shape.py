"""Shape ops: views that share storage (and the version counter) with their input, and joins."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engine import dtypes
from engine.autograd import Node, counter
from engine.autograd import grad_mode as _gm
from engine.errors import ShapeError
from engine.functions.common import (
    Tensor,
    cast,
    check_device,
    norm_dim,
    parse_size,
    record,
    unbroadcast,
    wrap,
)


def _view_of(a: Tensor, y: Any) -> Tensor:
    out = wrap(y, a._device)
    out._vc = counter(a)
    return out


class ReshapeBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.reshape(self.shape),)


def _reshaped(a: Tensor, y: Any, is_view: bool) -> Tensor:
    out = _view_of(a, y) if is_view else wrap(y, a._device)
    if a._rg and _gm.enabled:
        node = ReshapeBackward()
        node.shape = a._data.shape
        record(node, out, a)
    return out


def _infer(op: str, shape: tuple[int, ...], size: int, old: tuple[int, ...]) -> tuple[int, ...]:
    if shape.count(-1) > 1 or any(n < -1 for n in shape):
        raise ShapeError(f"{op}: invalid shape {shape} for input of shape {old}")
    if -1 in shape:
        known = math.prod(n for n in shape if n != -1)
        if known == 0 or size % known:
            raise ShapeError(
                f"{op}: shape {shape} is invalid for input of shape {old} ({size} elements)"
            )
        shape = tuple(size // known if n == -1 else n for n in shape)
    if math.prod(shape) != size:
        raise ShapeError(
            f"{op}: shape {shape} is invalid for input of shape {old} ({size} elements)"
        )
    return shape


def reshape(a: Tensor, *shape: Any) -> Tensor:
    ad = a._data
    target = _infer("reshape", parse_size("reshape", shape), ad.size, ad.shape)
    if target == ad.shape:
        return _reshaped(a, ad, True) if a._rg and _gm.enabled else _view_of(a, ad)
    y = ad.reshape(target)
    base = y.base
    return _reshaped(a, y, base is not None and (base is ad or base is ad.base))


def view(a: Tensor, *shape: Any) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], dtypes.dtype):
        raise TypeError("view(dtype) is not supported; use .to(dtype)")
    ad = a._data
    target = _infer("view", parse_size("view", shape), ad.size, ad.shape)
    try:
        y = a._device.ops.reshape_view(ad, target)
    except (ValueError, AttributeError):
        raise RuntimeError(
            f"view: shape {target} is not compatible with the strides of the input "
            f"(shape {ad.shape}, non-contiguous); use .reshape(...) instead"
        ) from None
    return _reshaped(a, y, True)


def view_as(a: Tensor, other: Tensor) -> Tensor:
    return view(a, other.shape)


def reshape_as(a: Tensor, other: Tensor) -> Tensor:
    return reshape(a, other.shape)


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    shape = a._data.shape
    if not shape:
        return reshape(a, 1)
    s = norm_dim(start_dim, len(shape), "flatten")
    e = norm_dim(end_dim, len(shape), "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(a, (*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :]))


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    shape = a._data.shape
    d = norm_dim(dim, len(shape) + 1, "unsqueeze")
    return reshape(a, (*shape[:d], 1, *shape[d:]))


def squeeze(a: Tensor, dim: Any = None) -> Tensor:
    shape = a._data.shape
    if dim is None:
        drop = {i for i, n in enumerate(shape) if n == 1}
    else:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        drop = {
            d for d in (norm_dim(d, len(shape), "squeeze") for d in dims) if shape and shape[d] == 1
        }
    return reshape(a, tuple(n for i, n in enumerate(shape) if i not in drop))


class PermuteBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.transpose(self.inverse),)


def permute(a: Tensor, *dims: Any) -> Tensor:
    ad = a._data
    order = parse_size("permute", dims)
    n = ad.ndim
    norm = tuple(norm_dim(d, n, "permute") for d in order)
    if len(norm) != n or sorted(norm) != list(range(n)):
        raise ShapeError(
            f"permute: dims {order} are not a permutation of the {n} dims of shape {ad.shape}"
        )
    out = _view_of(a, ad.transpose(norm))
    if a._rg and _gm.enabled:
        node = PermuteBackward()
        node.inverse = tuple(sorted(range(n), key=norm.__getitem__))
        record(node, out, a)
    return out


def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    n = a._data.ndim
    if n == 0:
        norm_dim(dim0, n, "transpose")
        norm_dim(dim1, n, "transpose")
        return _view_of(a, a._data) if not a._rg else reshape(a, ())
    order = list(range(n))
    d0, d1 = norm_dim(dim0, n, "transpose"), norm_dim(dim1, n, "transpose")
    order[d0], order[d1] = order[d1], order[d0]
    return permute(a, order)


def t(a: Tensor) -> Tensor:
    if a._data.ndim > 2:
        raise ShapeError(
            f"t: expects a tensor of at most 2 dims, got shape {a.shape}; use transpose"
        )
    return t_all(a)


def t_all(a: Tensor) -> Tensor:
    return permute(a, tuple(reversed(range(a._data.ndim))))


def t_matrix(a: Tensor) -> Tensor:
    if a._data.ndim < 2:
        raise ShapeError(f"mT: needs at least 2 dims, got shape {a.shape}")
    return transpose(a, -2, -1)


class ExpandBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (unbroadcast(gy, self.shape),)


def expand(a: Tensor, *sizes: Any) -> Tensor:
    ad = a._data
    want = parse_size("expand", sizes)
    lead = len(want) - ad.ndim
    if lead < 0:
        raise ShapeError(f"expand: cannot expand shape {ad.shape} to fewer dims {want}")
    target = []
    for i, size in enumerate(want):
        have = ad.shape[i - lead] if i >= lead else None
        n = size
        if n == -1:
            if have is None:
                raise ShapeError(f"expand: -1 is not allowed for a new leading dim in {want}")
            n = have
        elif have is not None and have not in (1, n):
            raise ShapeError(
                f"expand: the size {have} of dim {i - lead} of shape {ad.shape} "
                f"cannot expand to {n} (target {want})"
            )
        target.append(n)
    out = _view_of(a, a._device.xp.broadcast_to(ad, tuple(target)))
    if a._rg and _gm.enabled:
        node = ExpandBackward()
        node.shape = ad.shape
        record(node, out, a)
    return out


def expand_as(a: Tensor, other: Tensor) -> Tensor:
    return expand(a, other.shape)


class IdentityBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy,)


def contiguous(a: Tensor, memory_format: Any = None) -> Tensor:
    ad = a._data
    if ad.flags.c_contiguous:
        return a
    out = wrap(a._device.xp.ascontiguousarray(ad), a._device)
    if a._rg and _gm.enabled:
        record(IdentityBackward(), out, a)
    return out


def clone(a: Tensor, memory_format: Any = None) -> Tensor:
    out = wrap(a._data.copy(), a._device)
    if a._rg and _gm.enabled:
        record(IdentityBackward(), out, a)
    return out


def _slices(a: Tensor, dim: int, sizes: Sequence[int]) -> tuple[Tensor, ...]:
    from engine.functions.index import getitem

    head = (slice(None),) * dim
    out = []
    start = 0
    for n in sizes:
        out.append(getitem(a, (*head, slice(start, start + n))))
        start += n
    return tuple(out)


def split(a: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    d = norm_dim(dim, a._data.ndim, "split")
    n = a._data.shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size <= 0 and n:
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [min(size, n - s) for s in range(0, n, size)] if n else [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n:
            raise ShapeError(f"split: sections {sizes} do not sum to the size {n} of dim {d}")
    return _slices(a, d, sizes)


def chunk(a: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    d = norm_dim(dim, a._data.ndim, "chunk")
    n = a._data.shape[d]
    size = -(-n // chunks) if n else 0
    if size == 0:
        return _slices(a, d, [0] * chunks)  # PyTorch: `chunks` empty pieces
    return split(a, size, d)


# ---- joins --------------------------------------------------------------------------------
class CatBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        grads = []
        start = 0
        head = (slice(None),) * self.dim
        for n, target in zip(self.sizes, self.next, strict=True):
            grads.append(gy[(*head, slice(start, start + n))] if target is not None else None)
            start += n
        return tuple(grads)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"cat: expected Tensors, got {type(t).__name__}")
        check_device("cat", tensors[0], t)
    ndim = tensors[0]._data.ndim
    if ndim == 0:
        raise ShapeError("cat: zero-dimensional tensors cannot be concatenated; use stack")
    d = norm_dim(dim, ndim, "cat")
    result = tensors[0].dtype
    for t in tensors[1:]:
        result = dtypes.promote(result, t.dtype)
    tensors = [cast(t, result) for t in tensors]
    first = tensors[0]._data.shape
    for t in tensors[1:]:
        s = t._data.shape
        if len(s) != ndim or any(
            x != y for i, (x, y) in enumerate(zip(s, first, strict=True)) if i != d
        ):
            raise ShapeError(f"cat: shapes {first} and {s} differ outside dim {d}")
    xp = tensors[0]._device.xp
    out = wrap(xp.concatenate([t._data for t in tensors], axis=d), tensors[0]._device)
    if _gm.enabled and any(t._rg for t in tensors):
        node = CatBackward()
        node.dim = d
        node.sizes = [t._data.shape[d] for t in tensors]
        record(node, out, *tensors)
    return out


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    first = tensors[0].shape
    for t in tensors[1:]:
        if not isinstance(t, Tensor):
            raise TypeError(f"stack: expected Tensors, got {type(t).__name__}")
        check_device("stack", tensors[0], t)
        if t.shape != first:
            raise ShapeError(
                f"stack: expects each tensor to be equal size, got {first} and {t.shape}"
            )
    d = norm_dim(dim, len(first) + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)
