"""matmul with NumPy/PyTorch semantics: 1-D operands, batch broadcasting, and its backward."""

from __future__ import annotations

from typing import Any

from engine import dtypes
from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.errors import ShapeError
from engine.functions.common import Tensor, as_operand, check_device, record, unbroadcast, wrap

_LOW = frozenset((dtypes.float16.np, dtypes.bfloat16.np))
_F32 = dtypes.float32.np


def _mm(xp: Any, a: Any, b: Any) -> Any:
    # NumPy has no bfloat16 GEMM (ml_dtypes would loop in Python-speed C) and its
    # float16 one is hundreds of times slower than float32 BLAS and accumulates in
    # float16: multiply in float32 through BLAS and round once, which is what a 16-bit
    # GEMM (float32 accumulation) returns.
    if a.dtype in _LOW:
        return xp.matmul(a.astype(_F32), b.astype(_F32)).astype(a.dtype)
    return xp.matmul(a, b)


class MatmulBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, Any]:
        ad, bd = self.saved  # type: ignore[misc]
        xp = self.xp
        if ad.ndim == 1 and bd.ndim == 1:
            ga = gy * bd if self.next[0] is not None else None
            gb = gy * ad if self.next[1] is not None else None
            return ga, gb
        # Lift 1-D operands to matrices as matmul itself does, then drop the lifted dim.
        a2 = ad[None, :] if ad.ndim == 1 else ad
        b2 = bd[:, None] if bd.ndim == 1 else bd
        g2 = gy
        if ad.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if bd.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = gb = None
        if self.next[0] is not None:
            ga = unbroadcast(_mm(xp, g2, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(ad.shape)
        if self.next[1] is not None:
            gb = unbroadcast(_mm(xp, xp.swapaxes(a2, -1, -2), g2), b2.shape).reshape(bd.shape)
        return ga, gb


def matmul(a: Tensor, b: Any) -> Tensor:
    if not isinstance(b, Tensor):
        ob = as_operand("matmul", a, b)
        if not isinstance(ob, Tensor):
            raise TypeError(f"matmul: expected a Tensor operand, got {type(b).__name__}")
        b = ob
    check_device("matmul", a, b)
    if _ac.on:
        a, b = _autocast("matmul", a, b)
    ad, bd = a._data, b._data
    if ad.dtype != bd.dtype:
        raise TypeError(
            f"matmul: expected both operands to have the same dtype, got "
            f"{a.dtype} (shape {ad.shape}) and {b.dtype} (shape {bd.shape})"
        )
    if ad.ndim == 0 or bd.ndim == 0:
        raise ShapeError(
            f"matmul: both operands need at least 1 dim, got shapes {ad.shape} and {bd.shape}"
        )
    if ad.dtype.kind == "b":
        raise TypeError("matmul: not supported for bool tensors")
    xp = a._device.xp
    try:
        y = _mm(xp, ad, bd)
    except ValueError:
        raise ShapeError(
            f"matmul: shapes {ad.shape} and {bd.shape} cannot be multiplied "
            f"({ad.shape[-1]} != {bd.shape[-2] if bd.ndim > 1 else bd.shape[0]})"
        ) from None
    out = wrap(y if ad.ndim + bd.ndim > 2 else xp.asarray(y), a._device)
    if (a._rg or b._rg) and _gm.enabled:
        node = MatmulBackward()
        node.saved = (ad, bd)
        node.xp = xp
        save_versions(node, a, b)
        record(node, out, a, b)
    return out


def rmatmul(a: Tensor, b: Any) -> Tensor:
    ob = as_operand("matmul", a, b)
    if not isinstance(ob, Tensor):
        raise TypeError(f"matmul: expected a Tensor operand, got {type(b).__name__}")
    return matmul(ob, a)
