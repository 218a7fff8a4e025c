"""The `meta` device's backend: arrays with a shape and a dtype and no storage.

A model built on meta costs a few hundred bytes a parameter tensor whatever its size, so
a caller can count a model's parameters before allocating them (PyTorch's meta device).
`MetaArray` keeps its shape as a NumPy array of a zero-byte dtype (a "skeleton"), so
NumPy itself works out the shapes of views, indexing, reshapes and concatenation without
touching memory. Elementwise ufuncs and matmul give meta results of NumPy's shape and
dtype; reductions, padding, gathers and strided windows give results of the shape and
dtype NumPy's rules give, so a model's whole forward runs on meta (what the API checks
a job's model with). Whatever needs values (sorting, unique, boolean masks, host copies)
raises MetaUnsupportedError (a NotImplementedError) naming the operation, never
computing on made-up data.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple
from numpy.lib.mixins import NDArrayOperatorsMixin

from engine.backends.numpy_ops import ArrayOps

COPY_OUT = (
    "Cannot copy out of meta tensor; no data! Please use nn.Module.to_empty() instead of "
    "nn.Module.to() when moving a module from meta to a different device."
)
_NO_BYTES = np.dtype([])  # itemsize 0: a skeleton of any shape allocates nothing
_PY_SCALARS = (int, float, complex)


class MetaUnsupportedError(NotImplementedError):
    """An operation that needs values, asked of a meta tensor: a limit of the meta device,
    never a mistake in the caller's arguments (those raise as on the CPU)."""


def no_data(op: str, *operands: Any) -> MetaUnsupportedError:
    shapes = " and ".join(str(tuple(o.shape)) for o in operands if isinstance(o, MetaArray))
    where = f" (shape {shapes})" if shapes else ""
    return MetaUnsupportedError(
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
    def strides(self) -> tuple[int, ...]:
        # C-contiguous, as `flags` says: only a window's shape (as_strided's argument)
        # matters on meta, never where its elements would lie
        step, strides = self.dtype.itemsize, []
        for n in reversed(self.shape):
            strides.append(step)
            step *= n
        return tuple(reversed(strides))

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

    # a fresh skeleton, not a copy of this one: copying even zero-byte elements walks them
    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> MetaArray:
        return meta_array(self.shape, dtype)

    def copy(self, order: str = "C") -> MetaArray:
        return meta_array(self.shape, self.dtype)

    def fill(self, value: Any) -> None:
        """Nothing to fill."""

    def __getitem__(self, index: Any) -> MetaArray:
        # np.asarray: a skeleton indexed down to one element is a NumPy scalar, not an array
        return MetaArray(np.asarray(self._skel[_skeleton_index(index)]), self.dtype)

    def __setitem__(self, index: Any, value: Any) -> None:
        # nothing to write, but a value that does not fit fails as it would on data
        mask = index[0] if isinstance(index, tuple) and len(index) == 1 else index
        if isinstance(mask, MetaArray) and mask.dtype.kind == "b":
            _check_masked_write(self, mask, value)
            return
        target = self._skel[_skeleton_index(index)].shape
        given = _shape_of(value)
        if np.broadcast_shapes(given, target) != target:
            raise ValueError(f"could not broadcast a value of shape {given} into shape {target}")

    # ---- reductions: the shape and dtype NumPy's would have --------------------------------
    def sum(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.sum, self, *args, **kwargs)

    def prod(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.prod, self, *args, **kwargs)

    def mean(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.mean, self, *args, **kwargs)

    def var(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.var, self, *args, **kwargs)

    def std(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.std, self, *args, **kwargs)

    def max(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.max, self, *args, **kwargs)

    def min(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.min, self, *args, **kwargs)

    def argmax(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.argmax, self, *args, **kwargs)

    def argmin(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.argmin, self, *args, **kwargs)

    def all(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.all, self, *args, **kwargs)

    def any(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.any, self, *args, **kwargs)

    def cumsum(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.cumsum, self, *args, **kwargs)

    def cumprod(self, *args: Any, **kwargs: Any) -> MetaArray:
        return _reduce(np.cumprod, self, *args, **kwargs)

    # ---- NumPy's protocols: shapes through, values refused ---------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise MetaUnsupportedError(COPY_OUT)

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
        if func in _REDUCED_DTYPE:
            return _reduce(func, *args, **kwargs)
        rule = _RULES.get(func)
        if rule is not None:
            return rule(*args, **kwargs)
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
    if isinstance(x, np.generic):  # before Python's: np.float64 is a float, and strong
        return x.dtype
    if isinstance(x, _PY_SCALARS):
        return type(x)
    return x.dtype if isinstance(x, MetaArray | np.ndarray) else np.asarray(x).dtype


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


def _check_masked_write(a: MetaArray, mask: MetaArray, value: Any) -> None:
    """`a[mask] = value` fits whatever the mask holds when the value is one element (a
    masked fill); an array of values must match the count of True entries: data."""
    if mask.ndim > a.ndim:
        raise IndexError(
            f"too many indices for array: array is {a.ndim}-dimensional, but {mask.ndim} "
            "were indexed"
        )
    for axis, (n, m) in enumerate(zip(a.shape, mask.shape, strict=False)):
        if n != m:
            raise IndexError(
                f"boolean index did not match indexed array along axis {axis}; size of axis "
                f"is {n} but size of corresponding boolean axis is {m}"
            )
    if math.prod(_shape_of(value)) != 1:
        raise no_data("a masked write of several values", a, mask)


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
        # the triangles keep their input's shape (the rest is zeros)
        np.tril,
        np.triu,
    )
)


# ---- reductions ------------------------------------------------------------------------------
_INT = np.dtype(np.int_)


def _accumulated(d: np.dtype) -> np.dtype:
    """sum/prod/cumsum's dtype: bool and narrower integers accumulate in the platform's."""
    if d.kind in "bi" and d.itemsize < _INT.itemsize:
        return _INT
    if d.kind == "u" and d.itemsize < _INT.itemsize:
        return np.dtype(np.uint)
    return d


def _averaged(d: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if d.kind in "biu" else d


def _spread_of(d: np.dtype) -> np.dtype:
    """var/std's dtype: a complex input's spread is real."""
    return np.dtype(f"f{d.itemsize // 2}") if d.kind == "c" else _averaged(d)


def _same(d: np.dtype) -> np.dtype:
    return d


_REDUCED_DTYPE: dict[Callable[..., Any], Callable[[np.dtype], np.dtype]] = {
    np.sum: _accumulated,
    np.prod: _accumulated,
    np.cumsum: _accumulated,
    np.cumprod: _accumulated,
    np.mean: _averaged,
    np.var: _spread_of,
    np.std: _spread_of,
    np.max: _same,
    np.amax: _same,
    np.min: _same,
    np.amin: _same,
    np.argmax: lambda d: np.dtype(np.intp),
    np.argmin: lambda d: np.dtype(np.intp),
    np.all: lambda d: np.dtype(bool),
    np.any: lambda d: np.dtype(bool),
}
# NumPy's reductions with no identity, and what it says reducing nothing with them
_NO_IDENTITY = {
    "max": "zero-size array to reduction operation maximum which has no identity",
    "amax": "zero-size array to reduction operation maximum which has no identity",
    "min": "zero-size array to reduction operation minimum which has no identity",
    "amin": "zero-size array to reduction operation minimum which has no identity",
    "argmax": "attempt to get argmax of an empty sequence",
    "argmin": "attempt to get argmin of an empty sequence",
}


@functools.cache
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


def _reduce(func: Callable[..., Any], a: MetaArray, *args: Any, **kwargs: Any) -> MetaArray:
    """`func(a, ...)`'s result shape and dtype, from NumPy's signature of `func` (so axis,
    keepdims and dtype are read as NumPy reads them, by position or keyword)."""
    name = func.__name__
    given = _signature(func).bind(a, *args, **kwargs).arguments
    if given.get("out") is not None or "where" in given or "initial" in given:
        raise no_data(f"{name} with out=, where= or initial=", a)
    axis, ndim, shape = given.get("axis"), a.ndim, a.shape
    dtype = np.dtype(given.get("dtype") or _REDUCED_DTYPE[func](a.dtype))
    if name in ("cumsum", "cumprod"):
        if axis is None:
            return meta_array((a.size,), dtype)
        normalize_axis_index(axis, ndim)
        return meta_array(shape, dtype)
    if axis is None:
        axes = tuple(range(ndim))
    elif name in ("argmax", "argmin"):
        axes = (normalize_axis_index(axis, ndim),)
    else:
        axes = normalize_axis_tuple(axis, ndim)
    if given.get("keepdims", False):
        kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    else:
        kept = tuple(n for i, n in enumerate(shape) if i not in axes)
    if name in _NO_IDENTITY and math.prod(shape[i] for i in axes) == 0 and math.prod(kept):
        raise ValueError(_NO_IDENTITY[name])
    return meta_array(kept, dtype)


# ---- functions whose result shape a formula gives --------------------------------------------
def _pad(array: MetaArray, pad_width: Any, mode: Any = "constant", **kwargs: Any) -> MetaArray:
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (array.ndim, 2))
    if (widths < 0).any():
        raise ValueError("index can't contain negative values")
    return meta_array(
        tuple(int(n + lo + hi) for n, (lo, hi) in zip(array.shape, widths, strict=True)),
        array.dtype,
    )


def _take(a: Any, indices: Any, axis: Any = None, **kwargs: Any) -> MetaArray:
    if isinstance(indices, MetaArray) and indices.dtype.kind not in "iu":
        raise IndexError("arrays used as indices must be of integer (or boolean) type")
    if kwargs.get("out") is not None:
        raise no_data("take with out=", a)
    picked = _shape_of(indices)
    if axis is None:
        return meta_array(picked, a.dtype)
    d = normalize_axis_index(axis, a.ndim)
    return meta_array((*a.shape[:d], *picked, *a.shape[d + 1 :]), a.dtype)


def _take_along_axis(arr: Any, indices: Any, axis: Any = -1) -> MetaArray:
    if _dtype_of(indices).kind not in "iu":
        raise IndexError("`indices` must be an integer array")
    shape, picked = _shape_of(arr), _shape_of(indices)
    if axis is None:
        return meta_array(picked, arr.dtype)
    if len(picked) != len(shape):
        raise ValueError("`indices` and `arr` must have the same number of dimensions")
    d = normalize_axis_index(axis, len(shape))
    others = np.broadcast_shapes(
        (*shape[:d], 1, *shape[d + 1 :]), (*picked[:d], 1, *picked[d + 1 :])
    )
    return meta_array((*others[:d], picked[d], *others[d + 1 :]), arr.dtype)


_RULES: dict[Callable[..., Any], Callable[..., MetaArray]] = {
    np.pad: _pad,
    np.take: _take,
    np.take_along_axis: _take_along_axis,
}


def _as_strided(x: Any, shape: Any = None, strides: Any = None, **kwargs: Any) -> MetaArray:
    """A strided window view has the shape asked for; where it reads does not matter."""
    return meta_array(x.shape if shape is None else shape, x.dtype)


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
    lib=types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=_as_strided)),
)


class MetaOps(ArrayOps):
    """The backend of the meta device: host copies refused, creation and draws give meta
    arrays, the forward fused ops (written against `xp`) run on meta arrays as they are,
    and every other op (defined below from ArrayOps' list) refuses by name."""

    name = "meta"

    def __init__(self) -> None:
        self.xp = META_NUMPY

    def to_host(self, a: Any) -> np.ndarray:
        raise MetaUnsupportedError(COPY_OUT)

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

    def dropout_mask(self, shape: tuple[int, ...], dtype: Any, p: float, generator: Any) -> Any:
        return meta_array(shape, dtype)  # draws nothing, as random

    def erfc(self, a: Any) -> Any:
        return meta_array(a.shape, a.dtype)

    def normal_cdf(self, a: Any) -> Any:
        return meta_array(a.shape, a.dtype)


# What the meta backend does itself or inherits as is: on, synchronize and reshape_view
# need no data, and the forward fused ops are generic maths over `xp` and the ops above
# (so their results have the CPU's shapes and dtypes); every other ArrayOps method
# computes on values (or is a backward or an optimizer step) and refuses.
META_AWARE = frozenset(
    (
        *("on", "synchronize", "reshape_view", "to_host", "from_host"),
        *("random", "randint", "randperm", "dropout_mask", "erfc", "normal_cdf"),
        *("gelu", "silu", "dropout", "layer_norm_rows"),
    )
)


def _refusal(name: str) -> Callable[..., Any]:
    def refuse(self: MetaOps, *args: Any, **kwargs: Any) -> Any:
        raise no_data(name, *args)

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


for _name, _method in vars(ArrayOps).items():
    if callable(_method) and not _name.startswith("_") and _name not in META_AWARE:
        setattr(MetaOps, _name, _refusal(_name))
