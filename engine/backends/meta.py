"""The `meta` device's backend: arrays with a shape and a dtype and no storage.

A model built on meta costs a few hundred bytes a parameter tensor whatever its size, so
a caller can count a model's parameters before allocating them (PyTorch's meta device).
`MetaArray` keeps its shape as a NumPy array of a zero-byte dtype (a "skeleton"), so
NumPy itself works out the shapes of views, indexing, reshapes and concatenation without
touching memory. Elementwise ufuncs and matmul give meta results of NumPy's shape and
dtype; whatever needs values (reductions, sorting, host copies, the fused ops) raises
NotImplementedError naming the operation, never computing on made-up data.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from engine.backends.numpy_ops import ArrayOps

COPY_OUT = (
    "Cannot copy out of meta tensor; no data! Please use nn.Module.to_empty() instead of "
    "nn.Module.to() when moving a module from meta to a different device."
)
_NO_BYTES = np.dtype([])  # itemsize 0: a skeleton of any shape allocates nothing
_PY_SCALARS = (int, float, complex)


def no_data(op: str, *operands: Any) -> NotImplementedError:
    shapes = " and ".join(str(tuple(o.shape)) for o in operands if isinstance(o, MetaArray))
    where = f" (shape {shapes})" if shapes else ""
    return NotImplementedError(
        f"{op}: not supported on meta tensors{where}: a meta tensor holds only its shape "
        "and dtype, no data; move it to a real device first (Module.to_empty(device=...))"
    )


class MetaArray(NDArrayOperatorsMixin):
    """An array's shape and dtype with no storage; writes to it are no-ops."""

    __slots__ = ("_skel", "dtype")

    def __init__(self, skel: np.ndarray, dtype: Any) -> None:
        self._skel = skel
        self.dtype = np.dtype(dtype)

    # ---- what it has: metadata -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._skel.shape

    @property
    def ndim(self) -> int:
        return self._skel.ndim

    @property
    def size(self) -> int:
        return self._skel.size

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self._skel.size * self.dtype.itemsize

    @property
    def base(self) -> None:
        return None  # never a view of another array's buffer: there are no buffers

    @property
    def flags(self) -> Any:
        # writeable is the skeleton's (False for broadcast views, as NumPy's); strides are
        # not tracked, so every meta array reads as contiguous
        return self._skel.flags

    def __len__(self) -> int:
        return len(self._skel)

    def __repr__(self) -> str:
        return f"MetaArray(shape={self.shape}, dtype={self.dtype})"

    # ---- what costs nothing: views, casts, writes ------------------------------------------
    @property
    def T(self) -> MetaArray:
        return MetaArray(self._skel.T, self.dtype)

    def reshape(self, *shape: Any, **kwargs: Any) -> MetaArray:
        return MetaArray(self._skel.reshape(*shape, **kwargs), self.dtype)

    def transpose(self, *axes: Any) -> MetaArray:
        return MetaArray(self._skel.transpose(*axes), self.dtype)

    def swapaxes(self, a: int, b: int) -> MetaArray:
        return MetaArray(self._skel.swapaxes(a, b), self.dtype)

    def squeeze(self, axis: Any = None) -> MetaArray:
        return MetaArray(self._skel.squeeze(axis), self.dtype)

    def ravel(self) -> MetaArray:
        return MetaArray(self._skel.ravel(), self.dtype)

    def view(self, *args: Any) -> MetaArray:
        if args:
            raise no_data("view as another dtype", self)
        return MetaArray(self._skel.view(), self.dtype)

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> MetaArray:
        return MetaArray(self._skel.copy(), dtype)

    def copy(self, order: str = "C") -> MetaArray:
        return MetaArray(self._skel.copy(), self.dtype)

    def fill(self, value: Any) -> None:
        """Nothing to fill."""

    def __getitem__(self, index: Any) -> MetaArray:
        # np.asarray: a skeleton indexed down to one element is a NumPy scalar, not an array
        return MetaArray(np.asarray(self._skel[_skeleton_index(index)]), self.dtype)

    def __setitem__(self, index: Any, value: Any) -> None:
        # nothing to write, but a value that does not fit fails as it would on data
        target = self._skel[_skeleton_index(index)].shape
        given = _shape_of(value)
        if np.broadcast_shapes(given, target) != target:
            raise ValueError(f"could not broadcast a value of shape {given} into shape {target}")

    # ---- NumPy's protocols: shapes through, values refused ---------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise NotImplementedError(COPY_OUT)

    def __array_ufunc__(
        self, ufunc: np.ufunc, method: str, *inputs: Any, out: Any = None, **kwargs: Any
    ) -> Any:
        name = ufunc.__name__
        if method != "__call__" or kwargs.get("signature") is not None:
            raise no_data(f"{name}.{method}" if method != "__call__" else name, *inputs)
        if ufunc.signature is None:
            shape = np.broadcast_shapes(*(_shape_of(x) for x in inputs))
        elif ufunc is np.matmul:
            shape = _matmul_shape(*(_shape_of(x) for x in inputs))
        else:
            raise no_data(name, *inputs)
        resolved = ufunc.resolve_dtypes(
            (*(_dtype_of(x) for x in inputs), *(kwargs.get("dtype"),) * ufunc.nout),
            casting=kwargs.get("casting", "same_kind"),
        )
        if out is not None:
            targets = out if isinstance(out, tuple) else (out,)
            for t in targets:
                if not isinstance(t, MetaArray):
                    raise no_data(f"{name} into a non-meta array", *inputs)
                if np.broadcast_shapes(shape, t.shape) != t.shape:
                    raise ValueError(f"{name}: result of shape {shape} does not fit out {t.shape}")
            return targets[0] if ufunc.nout == 1 else targets
        results = tuple(MetaArray(_skeleton(shape), d) for d in resolved[ufunc.nin :])
        return results[0] if ufunc.nout == 1 else results

    def __array_function__(
        self, func: Callable[..., Any], types_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        name = func.__name__
        if func in _METADATA:
            return func(_skeletons(args[0]), *args[1:], **kwargs)
        if func is np.result_type:
            return np.result_type(*(_dtype_or_value(a) for a in args))
        if func is np.where and len(args) == 3:
            shape = np.broadcast_shapes(*(_shape_of(a) for a in args))
            return meta_array(shape, np.result_type(*(_dtype_or_value(a) for a in args[1:])))
        if func not in _SHAPE_ONLY:
            raise no_data(name, *(a for a in args if isinstance(a, MetaArray)))
        # the data is the first argument (a sequence of arrays for concatenate and stack);
        # the rest are sizes, axes or repeat counts
        wanted = kwargs.pop("dtype", None)
        dtype = wanted or np.result_type(*(a.dtype for a in _flat_arrays(args[0])))
        return MetaArray(func(_skeletons(args[0]), *args[1:], **kwargs), dtype)

    # ---- what needs data -----------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # every other ndarray attribute (sum, max, item, tolist, ...) reads values: refused
        # at lookup, so no caller mistakes a stand-in for the real thing
        if name.startswith("_"):
            raise AttributeError(name)
        raise no_data(name, self)

    def __bool__(self) -> bool:
        raise no_data("bool", self)

    def __float__(self) -> float:
        raise no_data("float", self)

    def __int__(self) -> int:
        raise no_data("int", self)

    def __index__(self) -> int:
        raise no_data("index", self)

    def __complex__(self) -> complex:
        raise no_data("complex", self)


def meta_array(shape: Any, dtype: Any) -> MetaArray:
    return MetaArray(_skeleton(shape), dtype)


_MAX_NUMEL = 2**63 - 1


def _skeleton(shape: Any) -> np.ndarray:
    skel = np.empty(shape, dtype=_NO_BYTES)
    # a zero-byte skeleton has room for any shape; a tensor's element count must fit int64
    if math.prod(skel.shape) > _MAX_NUMEL:
        raise RuntimeError(f"a tensor of shape {skel.shape} has more elements than int64 counts")
    return skel


def _shape_of(x: Any) -> tuple[int, ...]:
    return x.shape if isinstance(x, MetaArray) else np.shape(x)


def _dtype_of(x: Any) -> Any:
    """What ufunc.resolve_dtypes takes: a dtype, or a Python scalar's type (weak, NEP 50)."""
    if isinstance(x, bool):
        return np.dtype(bool)
    if isinstance(x, _PY_SCALARS):
        return type(x)
    return x.dtype if isinstance(x, MetaArray | np.ndarray | np.generic) else np.asarray(x).dtype


def _dtype_or_value(x: Any) -> Any:
    """What np.result_type takes: a meta array's dtype, anything else as it is."""
    return x.dtype if isinstance(x, MetaArray) else x


def _skeletons(x: Any) -> Any:
    """x with every array, also inside lists and tuples, replaced by a skeleton."""
    if isinstance(x, MetaArray):
        return x._skel
    if isinstance(x, np.ndarray):
        return _skeleton(x.shape)
    if isinstance(x, list | tuple):
        return type(x)(_skeletons(v) for v in x)
    return x


def _flat_arrays(x: Any) -> list[Any]:
    if isinstance(x, MetaArray | np.ndarray):
        return [x]
    if isinstance(x, list | tuple):
        return [a for v in x for a in _flat_arrays(v)]
    return []


def _skeleton_index(index: Any) -> Any:
    """An index for the skeleton: integer meta index arrays become zero-stride arrays of
    their shape; a boolean meta mask would give a shape that depends on data."""
    if isinstance(index, tuple):
        return tuple(_skeleton_index(i) for i in index)
    if not isinstance(index, MetaArray):
        return index
    if index.dtype.kind not in "iu":
        raise no_data("indexing with a boolean meta mask", index)
    return np.broadcast_to(np.intp(0), index.shape)


def _matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a or not b:
        raise ValueError("matmul: a 0-d operand")
    a2, b2 = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: shapes {a} and {b} do not match in their core dimension")
    shape = (*np.broadcast_shapes(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(b) == 1:
        shape = shape[:-1]
    if len(a) == 1:
        shape = (*shape[:-2], shape[-1]) if len(b) > 1 else shape[:-1]
    return shape


# NumPy functions that only read metadata, and those whose result is a view or rearrangement
# of their inputs (its shape is the skeleton's, its dtype the inputs' common one)
_METADATA = frozenset((np.shape, np.ndim, np.size))
_SHAPE_ONLY = frozenset(
    (
        np.reshape,
        np.transpose,
        np.swapaxes,
        np.moveaxis,
        np.expand_dims,
        np.squeeze,
        np.broadcast_to,
        np.ravel,
        np.concatenate,
        np.stack,
        np.flip,
        np.repeat,
    )
)


def _from_host(a: Any, dtype: Any = None, **kwargs: Any) -> MetaArray:
    """The meta array of `a`'s shape and dtype (or `dtype`): what a copy to meta keeps."""
    if isinstance(a, MetaArray):
        return a if dtype is None else a.astype(dtype)
    host = np.asarray(a)
    return meta_array(host.shape, host.dtype if dtype is None else dtype)


def _like(a: Any, dtype: Any = None, *args: Any, shape: Any = None, **kwargs: Any) -> MetaArray:
    return meta_array(
        _shape_of(a) if shape is None else shape, _dtype_of(a) if dtype is None else dtype
    )


def _full_like(a: Any, fill_value: Any, dtype: Any = None, **kwargs: Any) -> MetaArray:
    return _like(a, dtype, **kwargs)


def _sized(shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> MetaArray:
    return meta_array(shape, dtype)


def _full(shape: Any, fill_value: Any, dtype: Any = None, **kwargs: Any) -> MetaArray:
    return meta_array(shape, _dtype_of(fill_value) if dtype is None else dtype)


def _eye(n: int, m: int | None = None, k: int = 0, dtype: Any = float, **kwargs: Any) -> MetaArray:
    return meta_array((n, n if m is None else m), dtype)


def _arange(*args: Any, dtype: Any = None, **kwargs: Any) -> MetaArray:
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (*args, 1)[:3]
    n = max(math.ceil((stop - start) / step), 0)  # the length alone: no values are made
    return meta_array((n,), np.result_type(*args) if dtype is None else dtype)


def _linspace(
    start: Any, stop: Any, num: int = 50, *args: Any, dtype: Any = None, **kwargs: Any
) -> MetaArray:
    return meta_array((num,), np.float64 if dtype is None else dtype)


class _MetaNumpy(types.SimpleNamespace):
    """The meta device's `xp`: NumPy, whose ufuncs and functions dispatch to MetaArray,
    except that arrays it creates are meta arrays."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


META_NUMPY = _MetaNumpy(
    empty=_sized,
    zeros=_sized,
    ones=_sized,
    full=_full,
    empty_like=_like,
    zeros_like=_like,
    ones_like=_like,
    full_like=_full_like,
    eye=_eye,
    arange=_arange,
    linspace=_linspace,
    asarray=_from_host,
    array=_from_host,
    ascontiguousarray=_from_host,
)


class MetaOps(ArrayOps):
    """The backend of the meta device: host copies refused, creation and draws give meta
    arrays, and every fused op (defined below from ArrayOps' list) refuses by name."""

    name = "meta"

    def __init__(self) -> None:
        self.xp = META_NUMPY

    def to_host(self, a: Any) -> np.ndarray:
        raise NotImplementedError(COPY_OUT)

    def from_host(self, a: np.ndarray) -> Any:
        return _from_host(a)

    def random(
        self, generator: Any, kind: str, shape: tuple[int, ...], d: Any, a: float, b: float
    ) -> Any:
        return meta_array(shape, d.np)  # draws nothing: the generator's stream stays put

    def randint(
        self, generator: Any, low: int, high: int, shape: tuple[int, ...], dtype: Any
    ) -> Any:
        return meta_array(shape, dtype)

    def randperm(self, generator: Any, n: int, dtype: Any) -> Any:
        return meta_array((n,), dtype)


# What the meta backend does itself or inherits as is (on, synchronize and reshape_view
# need no data); every other ArrayOps method computes on values and refuses.
META_AWARE = frozenset(
    ("on", "synchronize", "reshape_view", "to_host", "from_host", "random", "randint", "randperm")
)


def _refusal(name: str) -> Callable[..., Any]:
    def refuse(self: MetaOps, *args: Any, **kwargs: Any) -> Any:
        raise no_data(name, *args)

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


for _name, _method in vars(ArrayOps).items():
    if callable(_method) and not _name.startswith("_") and _name not in META_AWARE:
        setattr(MetaOps, _name, _refusal(_name))
