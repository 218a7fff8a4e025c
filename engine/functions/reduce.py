"""Reductions over dims (int or tuple, keepdim), softmax/log_softmax and cumsum."""

from __future__ import annotations

import builtins
import math
from collections import namedtuple
from typing import Any

import numpy as np

from engine import dtypes
from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.functions.common import Tensor, norm_dim, norm_dims, record, to_float, wrap

_LOW = frozenset((dtypes.float16.np, dtypes.bfloat16.np))
_F32 = dtypes.float32.np

MinMax = namedtuple("MinMax", ["values", "indices"])


def _wide(ad: Any) -> Any:
    """float16/bfloat16 accumulate in float32, as PyTorch's CPU reductions do."""
    return ad.astype(_F32) if ad.dtype in _LOW else ad


def _kept_shape(shape: tuple[int, ...], dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def _spread(gy: Any, shape: tuple[int, ...], dims: tuple[int, ...], xp: Any) -> Any:
    """gy of a reduction broadcast back over the input's shape, as a new array.

    A new array rather than a broadcast view: a leaf needs one of its own anyway, and
    filling one costs less than NumPy's broadcast_to.
    """
    out = xp.empty(shape, dtype=gy.dtype)
    out[...] = gy.reshape(_kept_shape(shape, dims)) if len(dims) != len(shape) else gy
    return out


def _count(shape: tuple[int, ...], dims: tuple[int, ...]) -> int:
    return math.prod(shape[d] for d in dims)


def _check_nonempty(op: str, ad: Any, dims: tuple[int, ...]) -> None:
    if builtins.any(ad.shape[d] == 0 for d in dims) or (ad.size == 0 and not dims):
        raise IndexError(
            f"{op}: cannot reduce over a zero-size dimension of a tensor of shape {ad.shape}; "
            "pass a dim whose size is not 0"
        )


# ---- sum / mean ---------------------------------------------------------------------------
class SumBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (
            _spread(gy * self.scale if self.scale != 1 else gy, self.shape, self.dims, self.xp),
        )


def _sum_like(op: str, a: Tensor, dim: Any, keepdim: bool, mean: bool, dtype: Any) -> Tensor:
    if dtype is not None:
        from engine.functions.common import cast

        a = cast(a, dtypes.as_dtype(dtype))
    ad = a._data
    if mean and ad.dtype.kind in "biu":
        raise TypeError(
            f"mean: input dtype must be floating point, got {a.dtype}; use .float() first"
        )
    dims = norm_dims(dim, ad.ndim, op)
    wide = _wide(ad)
    y = wide.mean(axis=dims, keepdims=keepdim) if mean else wide.sum(axis=dims, keepdims=keepdim)
    if wide is not ad:
        y = y.astype(ad.dtype)
    xp = a._device.xp
    out = wrap(xp.asarray(y) if isinstance(y, np.generic) else y, a._device)
    if a._rg and _gm.enabled:
        node = SumBackward()
        node.shape = ad.shape
        node.dims = dims
        node.xp = xp
        node.scale = 1 / _count(ad.shape, dims) if mean and ad.size else 1
        record(node, out, a)
    return out


def sum(a: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    if _ac.on and dtype is None:  # autocast's float32 ops keep an explicit dtype
        (a,) = _autocast("sum", a)
    return _sum_like("sum", a, dim, keepdim, False, dtype)


def mean(a: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    return _sum_like("mean", a, dim, keepdim, True, dtype)


def sum_keepdim(a: Tensor, dims: Any) -> Tensor:
    return _sum_like("sum", a, dims, True, False, None)


# ---- var / std ----------------------------------------------------------------------------
class VarBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        centred, std = self.saved  # type: ignore[misc]
        gk = gy.reshape(_kept_shape(centred.shape, self.dims))
        with np.errstate(divide="ignore", invalid="ignore"):
            if std is None:
                g = (gk * (2 / self.denom)) * centred
            else:
                g = (gk / (std.reshape(gk.shape) * self.denom)) * centred
        return (g.astype(gy.dtype, copy=False),)


def _var_like(
    op: str, a: Tensor, dim: Any, unbiased: Any, keepdim: bool, correction: Any
) -> Tensor:
    if isinstance(dim, bool):  # var(True): PyTorch's old var(unbiased) form
        dim, unbiased = None, dim
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    a = to_float(a)
    ad = a._data
    dims = norm_dims(dim, ad.ndim, op)
    wide = _wide(ad)
    xp = a._device.xp
    centred = wide - wide.mean(axis=dims, keepdims=True)
    n = _count(ad.shape, dims)
    denom = np.float64(builtins.max(n - correction, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (centred * centred).sum(axis=dims, keepdims=keepdim) / denom
    y = xp.sqrt(v) if op == "std" else v
    y = xp.asarray(y).astype(ad.dtype, copy=False)
    out = wrap(y, a._device)
    if a._rg and _gm.enabled:
        node = VarBackward()
        node.saved = (centred, y if op == "std" else None)
        node.dims = dims
        node.denom = denom
        if op == "std":  # var's backward reads only its own copy of the centred input
            save_versions(node, out)
        record(node, out, a)
    return out


def var(
    a: Tensor,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: bool = False,
    *,
    correction: Any = None,
) -> Tensor:
    return _var_like("var", a, dim, unbiased, keepdim, correction)


def std(
    a: Tensor,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: bool = False,
    *,
    correction: Any = None,
) -> Tensor:
    return _var_like("std", a, dim, unbiased, keepdim, correction)


# ---- max / min ----------------------------------------------------------------------------
class AmaxBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        ad, y = self.saved  # type: ignore[misc]
        dims = self.dims
        ks = _kept_shape(ad.shape, dims)
        hit = ad == y.reshape(ks)
        share = hit / hit.sum(axis=dims, keepdims=True)  # ties share the gradient evenly
        return (gy.reshape(ks) * share.astype(gy.dtype, copy=False),)


class MaxDimBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (idx,) = self.saved  # type: ignore[misc]
        xp, d, shape = self.xp, self.dim, self.shape
        pos = xp.arange(shape[d]).reshape((-1,) + (1,) * (len(shape) - d - 1))
        gk = gy if self.keepdim else xp.expand_dims(gy, d)
        return (xp.where(pos == idx, gk, gy.dtype.type(0)),)


def _amax(op: str, a: Tensor, dim: Any, keepdim: bool, is_max: bool) -> Tensor:
    ad = a._data
    dims = norm_dims(dim, ad.ndim, op)
    _check_nonempty(op, ad, dims)
    y = ad.max(axis=dims, keepdims=keepdim) if is_max else ad.min(axis=dims, keepdims=keepdim)
    xp = a._device.xp
    out = wrap(xp.asarray(y) if isinstance(y, np.generic) else y, a._device)
    if a._rg and _gm.enabled:
        node = AmaxBackward()
        node.saved = (ad, out._data)
        node.dims = dims
        save_versions(node, a, out)
        record(node, out, a)
    return out


def _max_dim(op: str, a: Tensor, dim: int, keepdim: bool, is_max: bool) -> MinMax:
    ad = a._data
    d = norm_dim(dim, ad.ndim, op)
    if ad.ndim == 0:
        return MinMax(
            a.clone() if a._rg else wrap(ad.copy(), a._device),
            wrap(a._device.xp.zeros((), dtype=np.int64), a._device),
        )
    _check_nonempty(op, ad, (d,))
    xp = a._device.xp
    idx = ad.argmax(axis=d, keepdims=True) if is_max else ad.argmin(axis=d, keepdims=True)
    values = xp.take_along_axis(ad, idx, axis=d)
    if not keepdim:
        values = values.squeeze(d)
    out = wrap(values, a._device)
    if a._rg and _gm.enabled:
        node = MaxDimBackward()
        node.saved = (idx,)
        node.xp, node.dim, node.shape, node.keepdim = xp, d, ad.shape, keepdim
        record(node, out, a)
    indices = wrap(idx if keepdim else idx.squeeze(d), a._device)
    if out._node is not None:  # backward reads the indices: changing them must raise
        save_versions(out._node, indices)
    return MinMax(out, indices)


def max(a: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    if isinstance(dim, Tensor):
        from engine.functions.arith import maximum

        return maximum(a, dim)
    if dim is None:
        return _amax("max", a, None, False, True)
    return _max_dim("max", a, dim, keepdim, True)


def min(a: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    if isinstance(dim, Tensor):
        from engine.functions.arith import minimum

        return minimum(a, dim)
    if dim is None:
        return _amax("min", a, None, False, False)
    return _max_dim("min", a, dim, keepdim, False)


def amax(a: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    return _amax("amax", a, dim if dim != () else None, keepdim, True)


def amin(a: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    return _amax("amin", a, dim if dim != () else None, keepdim, False)


def _arg(op: str, a: Tensor, dim: Any, keepdim: bool, is_max: bool) -> Tensor:
    ad = a._data
    xp = a._device.xp
    if dim is None:
        _check_nonempty(op, ad, ())
        flat = ad.reshape(-1)
        i = flat.argmax() if is_max else flat.argmin()
        y = xp.asarray(i, dtype=np.int64)
        if keepdim:
            y = y.reshape((1,) * ad.ndim)
        return wrap(y, a._device)
    d = norm_dim(dim, ad.ndim, op)
    if ad.ndim == 0:
        return wrap(xp.zeros((), dtype=np.int64), a._device)
    _check_nonempty(op, ad, (d,))
    y = ad.argmax(axis=d, keepdims=keepdim) if is_max else ad.argmin(axis=d, keepdims=keepdim)
    return wrap(xp.asarray(y).astype(np.int64, copy=False), a._device)


def argmax(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _arg("argmax", a, dim, keepdim, True)


def argmin(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _arg("argmin", a, dim, keepdim, False)


def all(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    dims = norm_dims(dim, a._data.ndim, "all")
    return wrap(a._device.xp.asarray(a._data.all(axis=dims, keepdims=keepdim)), a._device)


def any(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    dims = norm_dims(dim, a._data.ndim, "any")
    return wrap(a._device.xp.asarray(a._data.any(axis=dims, keepdims=keepdim)), a._device)


# ---- norm / prod --------------------------------------------------------------------------
class NormBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        ad, y = self.saved  # type: ignore[misc]
        xp, p, dims = self.xp, self.p, self.dims
        ks = _kept_shape(ad.shape, dims)
        gk, yk = gy.reshape(ks), y.reshape(ks)
        if p == 1:
            g = gk * xp.sign(ad)
        elif p == math.inf:
            hit = xp.abs(ad) == yk
            g = gk * xp.sign(ad) * hit / hit.sum(axis=dims, keepdims=True)
        elif p == 2:
            g = gk * xp.where(yk == 0, 0, ad / xp.where(yk == 0, 1, yk))
        else:
            safe = xp.where(yk == 0, 1, yk)
            g = gk * xp.where(yk == 0, 0, ad * xp.abs(ad) ** (p - 2) / safe ** (p - 1))
        return (g.astype(ad.dtype, copy=False),)


def norm(a: Tensor, p: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
    if p == "fro":
        p = 2
    if not isinstance(p, int | float) or p <= 0:
        raise ValueError(f"norm: p must be a positive number, 'fro' or inf, got {p!r}")
    if _ac.on:
        (a,) = _autocast("norm", a)
    a = to_float(a)
    ad = a._data
    xp = a._device.xp
    dims = norm_dims(dim, ad.ndim, "norm")
    wide = _wide(ad)
    mag = xp.abs(wide)
    if p == math.inf:
        y = mag.max(axis=dims, keepdims=keepdim) if ad.size else xp.zeros(())
    elif p == 1:
        y = mag.sum(axis=dims, keepdims=keepdim)
    elif p == 2:
        y = xp.sqrt((wide * wide).sum(axis=dims, keepdims=keepdim))
    else:
        y = (mag**p).sum(axis=dims, keepdims=keepdim) ** (1 / p)
    out = wrap(xp.asarray(y).astype(ad.dtype, copy=False), a._device)
    if a._rg and _gm.enabled:
        node = NormBackward()
        node.saved = (ad, out._data)
        node.xp, node.p, node.dims = xp, p, dims
        save_versions(node, a, out)
        record(node, out, a)
    return out


class ProdBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (ad,) = self.saved  # type: ignore[misc]
        xp, d = self.xp, self.dim
        if d is None:
            x = ad.reshape(-1)
            axis = 0
            gk = gy.reshape(1)
        else:
            x, axis = ad, d
            gk = gy if self.keepdim else xp.expand_dims(gy, d)
        # prod of all others = exclusive cumprod from the left times from the right:
        # exact where x has zeros, unlike prod / x.
        head = (slice(None),) * axis
        n = x.shape[axis]
        ones = xp.ones_like(x[(*head, slice(0, 1))])
        left = xp.concatenate([ones, xp.cumprod(x, axis=axis)[(*head, slice(0, n - 1))]], axis)
        flipped = xp.cumprod(xp.flip(x, axis), axis=axis)[(*head, slice(0, n - 1))]
        right = xp.flip(xp.concatenate([ones, flipped], axis), axis)
        others = left * right
        return ((gk * others).reshape(ad.shape),)


def prod(a: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    if _ac.on and dtype is None:
        (a,) = _autocast("prod", a)
    if dtype is not None:
        from engine.functions.common import cast

        a = cast(a, dtypes.as_dtype(dtype))
    ad = a._data
    xp = a._device.xp
    d = None if dim is None else norm_dim(dim, ad.ndim, "prod")
    if ad.ndim == 0:
        d = None
    wide = _wide(ad)
    y = wide.prod() if d is None else wide.prod(axis=d, keepdims=keepdim)
    out = wrap(
        xp.asarray(y).astype(
            ad.dtype if ad.dtype.kind == "f" or ad.dtype in _LOW else np.int64, copy=False
        ),
        a._device,
    )
    if a._rg and _gm.enabled and ad.size:
        node = ProdBackward()
        node.saved = (ad,)
        node.xp, node.dim, node.keepdim = xp, d, keepdim
        save_versions(node, a)
        record(node, out, a)
    return out


# ---- softmax / log_softmax / cumsum -------------------------------------------------------
class SoftmaxBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        gyy = gy * y
        return (gyy - y * gyy.sum(axis=self.dim, keepdims=True),)


class LogSoftmaxBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        return (gy - self.xp.exp(y) * gy.sum(axis=self.dim, keepdims=True),)


def _softmax_like(op: str, a: Tensor, dim: Any, dtype: Any, log: bool) -> Tensor:
    if dim is None:
        raise TypeError(f"{op}: dim is required (PyTorch's implicit dim is deprecated)")
    if _ac.on and dtype is None:
        (a,) = _autocast(op, a)
    if dtype is not None:
        from engine.functions.common import cast

        a = cast(a, dtypes.as_dtype(dtype))
    ad = a._data
    if ad.dtype.kind in "biu":
        raise TypeError(f"{op}: needs a floating-point tensor, got {a.dtype}; pass dtype=")
    xp = a._device.xp
    d = norm_dim(dim, ad.ndim, op)
    if ad.ndim == 0:
        y = xp.zeros_like(ad) if log else xp.ones_like(ad)
    elif ad.size == 0:
        y = ad.copy()
    else:
        wide = _wide(ad)
        z = wide - wide.max(axis=d, keepdims=True)
        e = xp.exp(z)
        s = e.sum(axis=d, keepdims=True)
        y = z - xp.log(s) if log else e / s
        y = y.astype(ad.dtype, copy=False)
    out = wrap(y, a._device)
    if a._rg and _gm.enabled:
        node = LogSoftmaxBackward() if log else SoftmaxBackward()
        node.saved = (y,)
        node.dim, node.xp = d if ad.ndim else None, xp
        save_versions(node, out)
        record(node, out, a)
    return out


def softmax(a: Tensor, dim: Any = None, dtype: Any = None) -> Tensor:
    return _softmax_like("softmax", a, dim, dtype, False)


def log_softmax(a: Tensor, dim: Any = None, dtype: Any = None) -> Tensor:
    return _softmax_like("log_softmax", a, dim, dtype, True)


class CumsumBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        xp, d = self.xp, self.dim
        return (xp.flip(xp.cumsum(xp.flip(gy, d), axis=d), d),)


def cumsum(a: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    if _ac.on and dtype is None:
        (a,) = _autocast("cumsum", a)
    if dtype is not None:
        from engine.functions.common import cast

        a = cast(a, dtypes.as_dtype(dtype))
    ad = a._data
    xp = a._device.xp
    d = norm_dim(dim, ad.ndim, "cumsum")
    if ad.ndim == 0:
        return a.clone()
    wide = _wide(ad)
    y = xp.cumsum(wide, axis=d)
    y = y.astype(ad.dtype if ad.dtype.kind == "f" or ad.dtype in _LOW else np.int64, copy=False)
    out = wrap(y, a._device)
    if a._rg and _gm.enabled:
        node = CumsumBackward()
        node.xp, node.dim = xp, d
        record(node, out, a)
    return out
