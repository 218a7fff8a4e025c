"""Indexing: __getitem__ (ints, slices, None, Ellipsis, integer and bool index tensors),
__setitem__ on tensors that need no grad, and gather."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.autograd import Node, counter, save_versions
from engine.autograd import grad_mode as _gm
from engine.errors import DeviceError, ShapeError
from engine.functions.common import Tensor, check_device, norm_dim, record, wrap


def _index(a: Tensor, idx: Any) -> tuple[tuple[Any, ...], bool]:
    """idx as a tuple of backend indices, and whether it holds an integer array."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    out = []
    advanced_int = False
    for i in idx:
        if isinstance(i, Tensor):
            kind = i._data.dtype.kind
            if kind not in "biu":
                raise IndexError(
                    f"index: tensors used as indices must be long, int or bool, got {i.dtype}"
                )
            arr = i._data
            if i._device is not a._device:
                if i._device.type != "cpu":
                    raise DeviceError(
                        f"index: indices on {i._device} cannot index a tensor on {a._device}"
                    )
                arr = a._device.ops.from_host(arr)
            advanced_int |= kind != "b"
            out.append(arr)
        elif isinstance(i, list | np.ndarray):
            arr = np.array(i)  # a copy: backward must not see the caller's later changes
            if arr.dtype.kind not in "biu":
                raise IndexError(f"index: index lists must hold ints or bools, got {arr.dtype}")
            advanced_int |= arr.dtype.kind != "b"
            out.append(a._device.ops.from_host(arr))
        elif i is None or i is Ellipsis or isinstance(i, int | slice | np.integer):
            out.append(i)
        else:
            raise IndexError(f"index: unsupported index of type {type(i).__name__}")
    return tuple(out), advanced_int


class IndexBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (index,) = self.saved  # type: ignore[misc]
        g = self.xp.zeros(self.shape, dtype=gy.dtype)
        if self.accumulate:
            self.ops.index_add(g, index, gy)
        else:
            g[index] = gy
        return (g,)


def _is_basic(idx: tuple[Any, ...]) -> bool:
    return all(i is None or i is Ellipsis or isinstance(i, int | slice | np.integer) for i in idx)


def getitem(a: Tensor, idx: Any) -> Tensor:
    ad = a._data
    index, accumulate = _index(a, idx)
    basic = _is_basic(index)
    try:
        y = ad[index]
        if basic and isinstance(y, np.generic):
            index = (*index, Ellipsis)  # a 0-d view, as PyTorch's, rather than NumPy's copy
            y = ad[index]
    except IndexError as e:
        raise IndexError(f"index: {e} (tensor of shape {ad.shape})") from None
    except (ValueError, TypeError) as e:
        raise IndexError(f"index: {e} (tensor of shape {ad.shape})") from None
    if isinstance(y, np.generic):
        y = np.asarray(y)
    out = wrap(y, a._device)
    if basic:
        out._vc = counter(a)
    if a._rg and _gm.enabled:
        node = IndexBackward()
        node.shape = ad.shape
        node.saved = (index,)
        node.accumulate = accumulate
        node.xp = a._device.xp
        node.ops = a._device.ops
        if not basic:  # backward reads the index tensors' arrays: changing them must raise
            held = [i for i in (idx if isinstance(idx, tuple) else (idx,)) if isinstance(i, Tensor)]
            save_versions(node, *held)
        record(node, out, a)
    return out


def writable(op: str, a: Tensor) -> Any:
    """a's array, ready for an in-place write; refuses tensors that take part in autograd."""
    if a._rg and _gm.enabled:
        raise RuntimeError(
            f"{op}: in-place operation on a tensor that requires grad; in-place ops take no "
            "part in autograd, so do it under `with engine.no_grad():` or use the "
            "out-of-place op"
        )
    ad = a._data
    if isinstance(ad, np.generic):
        ad = a._data = np.array(ad)
    elif not getattr(ad.flags, "writeable", True):  # NumPy's broadcast views (expand)
        raise RuntimeError(
            f"{op}: unsupported operation: more than one element of the written-to tensor "
            "refers to a single memory location (an expanded tensor); clone() it first"
        )
    return ad


def bump(a: Tensor) -> None:
    counter(a)[0] += 1  # created on first write too: `_version` counts every change


def setitem(a: Tensor, idx: Any, value: Any) -> None:
    ad = writable("setitem", a)
    index, _ = _index(a, idx)
    if isinstance(value, Tensor):
        check_device("setitem", a, value)
        v = value._data
    elif isinstance(value, np.ndarray):
        v = a._device.ops.from_host(value)
    else:
        v = value
    try:
        ad[index] = v
    except ValueError as e:
        raise ShapeError(
            f"setitem: cannot assign a value of shape {getattr(v, 'shape', ())} "
            f"to tensor of shape {ad.shape} at {idx!r}: {e}"
        ) from None
    except IndexError as e:
        raise IndexError(f"setitem: {e} (tensor of shape {ad.shape})") from None
    bump(a)


class GatherBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (index,) = self.saved  # type: ignore[misc]
        xp, d, shape = self.xp, self.dim, self.shape
        g = xp.zeros(shape, dtype=gy.dtype)
        full = tuple(
            index if k == d else xp.arange(n).reshape((-1,) + (1,) * (index.ndim - k - 1))
            for k, n in enumerate(index.shape)
        )
        self.ops.index_add(g, full, gy)
        return (g,)


def gather(a: Tensor, dim: int, index: Tensor) -> Tensor:
    if not isinstance(index, Tensor) or index._data.dtype.kind not in "iu":
        raise TypeError("gather: index must be an int64 or int32 Tensor")
    check_device("gather", a, index)
    ad, idx = a._data, index._data
    d = norm_dim(dim, ad.ndim, "gather")
    if idx.ndim != ad.ndim or any(i != d and idx.shape[i] > ad.shape[i] for i in range(ad.ndim)):
        raise ShapeError(
            f"gather: index of shape {idx.shape} does not fit input of shape {ad.shape} "
            f"along dims other than {d}"
        )
    xp = a._device.xp
    # checked on the host only: on CUDA the check would wait for the GPU
    if a._device.type == "cpu" and idx.size and ((idx < 0) | (idx >= ad.shape[d])).any():
        raise IndexError(f"gather: index out of range for dim {d} of size {ad.shape[d]}")
    src = ad[tuple(slice(None) if i == d else slice(0, n) for i, n in enumerate(idx.shape))]
    out = wrap(xp.take_along_axis(src, idx, axis=d), a._device)
    if a._rg and _gm.enabled:
        node = GatherBackward()
        node.saved = (idx,)
        node.xp, node.ops, node.dim, node.shape = xp, a._device.ops, d, ad.shape
        save_versions(node, index)
        record(node, out, a)
    return out
