"""The engine's dtypes, their NumPy twins, and PyTorch's type-promotion rules.

bfloat16 has no NumPy dtype of its own; ml_dtypes provides one that both NumPy and
CuPy (14+) understand, so one table serves both backends.
"""

from __future__ import annotations

import builtins

import ml_dtypes
import numpy as np

_BOOL, _INT, _FLOAT = 0, 1, 2


class dtype:
    __slots__ = ("_rank", "category", "itemsize", "name", "np")

    def __init__(self, name: str, np_dtype: np.dtype, category: int, rank: int) -> None:
        self.name = name
        self.np = np.dtype(np_dtype)
        self.category = category
        self.itemsize = self.np.itemsize
        self._rank = rank

    @property
    def is_floating_point(self) -> bool:
        return self.category == _FLOAT

    @property
    def is_signed(self) -> bool:
        return self.category != _BOOL

    def __repr__(self) -> str:
        return f"engine.{self.name}"

    def __reduce__(self) -> str:
        return "bool_" if self.name == "bool" else self.name  # this module's attribute


bool_ = dtype("bool", np.bool_, _BOOL, 0)
int32 = dtype("int32", np.int32, _INT, 1)
int64 = dtype("int64", np.int64, _INT, 2)
float16 = dtype("float16", np.float16, _FLOAT, 1)
bfloat16 = dtype("bfloat16", ml_dtypes.bfloat16, _FLOAT, 1)
float32 = dtype("float32", np.float32, _FLOAT, 2)
float64 = dtype("float64", np.float64, _FLOAT, 3)

ALL = (float32, float16, bfloat16, float64, int64, int32, bool_)
_BY_NP: dict[np.dtype, dtype] = {d.np: d for d in ALL}
_BY_NAME: dict[str, dtype] = {d.name: d for d in ALL}

_default_float = float32


def get_default_dtype() -> dtype:
    return _default_float


def set_default_dtype(d: dtype) -> None:
    global _default_float
    d = as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(
            f"set_default_dtype: only floating-point dtypes can be the default, got {d}"
        )
    _default_float = d


def from_np(npdt: np.dtype) -> dtype:
    try:
        return _BY_NP[npdt]
    except KeyError:
        raise TypeError(
            f"the engine has no dtype for NumPy's {npdt}; supported: "
            + ", ".join(d.name for d in ALL)
        ) from None


def as_dtype(d: object) -> dtype:
    """An engine dtype from an engine dtype, a NumPy dtype, a name or a Python type."""
    if isinstance(d, dtype):
        return d
    if d is builtins.float:
        return _default_float
    if d is builtins.int:
        return int64
    if d is builtins.bool:
        return bool_
    if isinstance(d, str) and d in _BY_NAME:
        return _BY_NAME[d]
    try:
        return from_np(np.dtype(d))  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{d!r} is not a dtype the engine knows") from None


def promote(a: dtype, b: dtype) -> dtype:
    """PyTorch's result type of two tensors of the same priority (both dimensioned or both 0-d)."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a._rank == b._rank:  # float16 with bfloat16: neither holds the other
        return float32
    return a if a._rank > b._rank else b


def promote_dim(a: dtype, a_ndim: int, b: dtype, b_ndim: int) -> dtype:
    """PyTorch's rule: a 0-d tensor only changes the result's dtype when its category is higher."""
    if (a_ndim == 0) == (b_ndim == 0):
        return promote(a, b)
    zero, dim = (a, b) if a_ndim == 0 else (b, a)
    return zero if zero.category > dim.category else dim


def scalar_dtype(value: object) -> dtype:
    """The dtype a Python scalar becomes on its own: bool, int64 or the default float."""
    if isinstance(value, builtins.bool | np.bool_):
        return bool_
    if isinstance(value, builtins.int | np.integer):
        return int64
    return _default_float


def with_scalar(t: dtype, value: object) -> dtype:
    """A tensor's dtype with a Python scalar: the scalar counts only if its category is higher."""
    s = scalar_dtype(value)
    return s if s.category > t.category else t
