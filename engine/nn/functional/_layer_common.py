"""What the layers' functional ops share: compute dtypes, argument checks, in-place results."""

from __future__ import annotations

from typing import Any

from engine import dtypes
from engine.functions.common import Tensor, check_device, needs_grad
from engine.functions.index import bump, writable

LOW = frozenset((dtypes.float16.np, dtypes.bfloat16.np))
F32 = dtypes.float32.np


def wide(a: Any) -> Any:
    """float16/bfloat16 arrays as float32: NumPy has no fast or accurate maths for them."""
    return a.astype(F32) if a.dtype in LOW else a


def narrow(a: Any, dtype: Any) -> Any:
    """A result computed wide, back in the caller's dtype (no copy when it already is)."""
    return a.astype(dtype, copy=False)


def gemm(xp: Any, a: Any, b: Any) -> Any:
    """a @ b, through float32 BLAS for 16-bit floats and rounded once, as a 16-bit GEMM is."""
    if a.dtype in LOW:
        return xp.matmul(a.astype(F32), b.astype(F32)).astype(a.dtype)
    return xp.matmul(a, b)


def floating(op: str, *tensors: Tensor | None) -> None:
    """Every given tensor is a float tensor of the first one's dtype, on its device."""
    first = tensors[0]
    assert first is not None
    if not isinstance(first, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(first).__name__}")
    if not first.is_floating_point():
        raise TypeError(f"{op}: needs a floating-point input, got {first.dtype}")
    for t in tensors[1:]:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected a Tensor, got {type(t).__name__}")
        check_device(op, first, t)
        if t._data.dtype != first._data.dtype:
            raise TypeError(
                f"{op}: expected all tensors to have the same dtype, got {first.dtype} "
                f"(shape {first.shape}) and {t.dtype} (shape {t.shape})"
            )


def pair(op: str, name: str, v: Any) -> tuple[int, int]:
    """An int or a pair of ints as a pair, as PyTorch's 2-d ops take their sizes."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, tuple | list) and len(v) == 1:
        return (int(v[0]), int(v[0]))
    if isinstance(v, tuple | list) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")


def maybe_inplace(a: Tensor, out: Tensor, inplace: bool) -> Tensor:
    """`inplace=True`: write out into a where no gradient flows through a.

    In-place ops take part in no graph in this engine, so where a needs grad the result
    stays out of place: same values, a left as it was (and `nn.ReLU(inplace=True)` models
    still train).
    """
    if not inplace or needs_grad(a):
        return out
    writable("inplace", a)[...] = out._data
    bump(a)
    return a
