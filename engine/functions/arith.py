"""Elementwise ops: arithmetic with broadcasting, unary maths, comparisons, where/clamp."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import dtypes
from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.errors import ShapeError
from engine.functions.common import (
    SCALARS,
    Tensor,
    as_operand,
    cast,
    check_device,
    promote_pair,
    record,
    shape_error,
    to_float,
    unbroadcast,
    wrap,
)

_BF16 = dtypes.bfloat16.np


def _coerce(op: str, a: Tensor, b: Any) -> tuple[Tensor, Any]:
    """The slow path of a binary op: b made a tensor or scalar, both promoted."""
    ob = as_operand(op, a, b)
    if ob is None:
        raise TypeError(f"{op}: unsupported operand type {type(b).__name__} with a Tensor")
    return promote_pair(a, ob)


def _scalar(ad: Any, s: Any) -> Any:
    # NumPy treats Python scalars as weak for its own dtypes but not for ml_dtypes'
    # bfloat16, where `x * 2.5` would come out float32.
    return ad.dtype.type(s) if ad.dtype is _BF16 else s


def _fail(op: str, e: Exception, *operands: Any) -> Exception:
    shapes = [getattr(o, "shape", ()) for o in operands]
    if isinstance(e, ValueError | IndexError):
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            return shape_error(op, *shapes)
        # Shapes that broadcast: a value error, e.g. an integer to a negative integer power.
        return RuntimeError(f"{op}: {str(e)[:1].lower()}{str(e)[1:]}")
    kinds = ", ".join(str(o.dtype) if isinstance(o, Tensor) else type(o).__name__ for o in operands)
    return TypeError(f"{op}: not supported for {kinds}")


def _apply(op: str, fn: Any, *operands: Any) -> Any:
    """Run an array function; NumPy/CuPy errors become the engine's, naming the op."""
    try:
        return fn()
    except (ValueError, TypeError, IndexError, ArithmeticError) as e:
        raise _fail(op, e, *operands) from None


# ---- add / sub ----------------------------------------------------------------------------
class AddBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        sa, sb, alpha = self.shapes_alpha
        ga = unbroadcast(gy, sa) if self.next[0] is not None else None
        if len(self.next) == 1:
            return (ga,)
        gb = None
        if self.next[1] is not None:
            gb = unbroadcast(gy if alpha == 1 else gy * alpha, sb)
        return ga, gb


def add(a: Tensor, b: Any, *, alpha: Any = 1, _op: str = "add") -> Tensor:
    # `_op` lets sub share this body and still name itself in errors.
    if type(b) is not Tensor or a._data.dtype is not b._data.dtype or a._device is not b._device:
        a, b = _coerce(_op, a, b)
        if not isinstance(b, Tensor):
            # b * 1 would turn a bool scalar into an int (bool tensor + True is bool)
            return _add_scalar(a, b if alpha == 1 else b * alpha, _op)
    ad, bd = a._data, b._data
    try:
        out = wrap(ad + bd if alpha == 1 else ad + bd * alpha, a._device)
    except ValueError:
        raise shape_error(_op, ad.shape, bd.shape) from None
    if (a._rg or b._rg) and _gm.enabled:
        node = AddBackward()
        node.shapes_alpha = (ad.shape, bd.shape, alpha)
        record(node, out, a, b)
    return out


def _add_scalar(a: Tensor, s: Any, op: str) -> Tensor:
    ad = a._data
    out = wrap(_apply(op, lambda: ad + _scalar(ad, s), a, s), a._device)
    if a._rg and _gm.enabled:
        node = AddBackward()
        node.shapes_alpha = (ad.shape, (), 1)
        record(node, out, a)
    return out


def _no_bool_sub(a: Tensor, b: Any) -> None:
    if a._data.dtype == dtypes.bool_.np or (
        isinstance(b, Tensor) and b._data.dtype == dtypes.bool_.np
    ):
        raise TypeError("sub: subtraction of bool tensors is not supported; use logical_xor or ~")


def sub(a: Tensor, b: Any, *, alpha: Any = 1) -> Tensor:
    _no_bool_sub(a, b)
    if isinstance(b, SCALARS):
        return add(a, -b * alpha, _op="sub")
    return add(a, b, alpha=-alpha, _op="sub")


def rsub(a: Tensor, b: Any) -> Tensor:
    """b - a for a scalar or array b."""
    _no_bool_sub(a, b)
    return add(neg(a), b, _op="sub")


# ---- mul / div ----------------------------------------------------------------------------
class MulBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, Any]:
        ad, bd = self.saved  # type: ignore[misc]
        ga = unbroadcast(gy * bd, ad.shape) if self.next[0] is not None else None
        gb = unbroadcast(gy * ad, bd.shape) if self.next[1] is not None else None
        return ga, gb


class ScaleBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy * self.factor,)


def mul(a: Tensor, b: Any) -> Tensor:
    if type(b) is not Tensor or a._data.dtype is not b._data.dtype or a._device is not b._device:
        a, b = _coerce("mul", a, b)
        if not isinstance(b, Tensor):
            return _scale(a, b)
    ad, bd = a._data, b._data
    try:
        out = wrap(ad * bd, a._device)
    except ValueError:
        raise shape_error("mul", ad.shape, bd.shape) from None
    except TypeError as e:
        raise _fail("mul", e, a, b) from None
    if (a._rg or b._rg) and _gm.enabled:
        node = MulBackward()
        node.saved = (ad, bd)
        save_versions(node, a, b)
        record(node, out, a, b)
    return out


def _scale(a: Tensor, s: Any) -> Tensor:
    ad = a._data
    s = _scalar(ad, s)
    out = wrap(_apply("mul", lambda: ad * s, a, s), a._device)
    if a._rg and _gm.enabled:
        node = ScaleBackward()
        node.factor = s
        record(node, out, a)
    return out


class DivBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, Any]:
        ad, bd = self.saved  # type: ignore[misc]
        ga = unbroadcast(gy / bd, ad.shape) if self.next[0] is not None else None
        gb = None
        if self.next[1] is not None:
            gb = unbroadcast(-(gy * ad) / (bd * bd), bd.shape)
        return ga, gb


def div(a: Tensor, b: Any, *, rounding_mode: str | None = None) -> Tensor:
    if rounding_mode is not None:
        return _div_rounded(a, b, rounding_mode)
    if type(b) is not Tensor or a._data.dtype is not b._data.dtype or a._device is not b._device:
        a, b = _coerce("div", a, b)
    a = to_float(a)  # true division of integers gives the default float, as PyTorch's
    if not isinstance(b, Tensor):
        return _div_scalar(a, b)
    b = cast(b, a.dtype)
    ad, bd = a._data, b._data
    out = wrap(_apply("div", lambda: ad / bd, a, b), a._device)
    if (a._rg or b._rg) and _gm.enabled:
        node = DivBackward()
        node.saved = (ad, bd)
        save_versions(node, a, b)
        record(node, out, a, b)
    return out


class DivScalarBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy / self.divisor,)


def _div_scalar(a: Tensor, s: Any) -> Tensor:
    ad = a._data
    s = _scalar(ad, s)
    out = wrap(_apply("div", lambda: ad / s, a, s), a._device)
    if a._rg and _gm.enabled:
        node = DivScalarBackward()
        node.divisor = s
        record(node, out, a)
    return out


def _div_rounded(a: Tensor, b: Any, mode: str) -> Tensor:
    if mode not in ("trunc", "floor"):
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {mode!r}")
    a, b = _coerce("div", a, b)
    xp = a._device.xp
    bd = b._data if isinstance(b, Tensor) else b
    ad = a._data
    if ad.dtype.kind in "iu" and (not isinstance(b, float)):
        q = _apply("div", lambda: xp.floor_divide(ad, bd), a, b)
        if mode == "trunc":
            q = q + ((q < 0) & (q * bd != ad))
        return wrap(q, a._device)
    q = _apply("div", lambda: ad / bd, a, b)
    return wrap(xp.trunc(q) if mode == "trunc" else xp.floor(q), a._device)


def rdiv(a: Tensor, b: Any) -> Tensor:
    """b / a for a scalar or array b."""
    ob = as_operand("div", a, b)
    if ob is None:
        raise TypeError(f"div: unsupported operand type {type(b).__name__} with a Tensor")
    if isinstance(ob, Tensor):
        return div(ob, a)
    return mul(reciprocal(a), ob)


class ReciprocalBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        return (-gy * y * y,)


def reciprocal(a: Tensor) -> Tensor:
    if _ac.on:
        (a,) = _autocast("reciprocal", a)
    a = to_float(a)
    ad = a._data
    out = wrap(_apply("reciprocal", lambda: 1 / ad, a), a._device)
    return _keep_output(ReciprocalBackward, out, a)


# ---- pow ----------------------------------------------------------------------------------
class PowScalarBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (ad,) = self.saved  # type: ignore[misc]
        e = self.exponent
        if e == 0:
            return (gy * 0,)
        if e == 2:
            return (gy * (2 * ad),)
        return (gy * (e * ad ** _scalar(ad, e - 1)),)


class RPowBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        return (gy * y * self.log_base,)


class PowBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, Any]:
        ad, bd, y = self.saved  # type: ignore[misc]
        xp = self.xp
        ga = gb = None
        if self.next[0] is not None:
            ga = unbroadcast(xp.where(bd == 0, 0, gy * bd * ad ** (bd - 1)), ad.shape)
        if self.next[1] is not None:
            log_a = xp.log(xp.where(ad == 0, 1, ad))
            gb = unbroadcast(gy * y * log_a, bd.shape)
        return ga, gb


def pow(a: Tensor, b: Any) -> Tensor:
    if _ac.on:
        a, b = _autocast("pow", a, b)
    if not isinstance(b, Tensor):
        ob = as_operand("pow", a, b)
        if ob is None:
            raise TypeError(f"pow: unsupported exponent type {type(b).__name__}")
        if not isinstance(ob, Tensor):
            a, e = promote_pair(a, ob)
            ad = a._data
            out = wrap(_apply("pow", lambda: ad ** _scalar(ad, e), a, e), a._device)
            if a._rg and _gm.enabled:
                node = PowScalarBackward()
                node.saved = (ad,)
                node.exponent = e
                save_versions(node, a)
                record(node, out, a)
            return out
        b = ob
    check_device("pow", a, b)
    a, b = promote_pair(a, b)
    ad, bd = a._data, b._data
    out = wrap(_apply("pow", lambda: ad**bd, a, b), a._device)
    if (a._rg or b._rg) and _gm.enabled:
        node = PowBackward()
        node.saved = (ad, bd, out._data)
        node.xp = a._device.xp
        save_versions(node, a, b, out)
        record(node, out, a, b)
    return out


def rpow(a: Tensor, b: Any) -> Tensor:
    """b ** a for a scalar base b."""
    ob = as_operand("pow", a, b)
    if ob is None:
        raise TypeError(f"pow: unsupported base type {type(b).__name__}")
    if isinstance(ob, Tensor):
        return pow(ob, a)
    if _ac.on:
        (a,) = _autocast("pow", a)
    rd = dtypes.with_scalar(a.dtype, ob)
    a = cast(a, rd)
    ad = a._data
    out = wrap(_apply("pow", lambda: _scalar(ad, ob) ** ad, a, ob), a._device)
    if a._rg and _gm.enabled:
        import math

        node = RPowBackward()
        node.saved = (out._data,)
        node.log_base = math.log(ob) if ob > 0 else float("nan")
        save_versions(node, out)
        record(node, out, a)
    return out


# ---- maximum / minimum --------------------------------------------------------------------
class MaxMinBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, Any]:
        ad, bd = self.saved  # type: ignore[misc]
        # Ties split the gradient evenly, as PyTorch's maximum/minimum do.
        wins = (ad > bd) if self.is_max else (ad < bd)
        w = wins.astype(gy.dtype) + (ad == bd).astype(gy.dtype) * 0.5
        ga = unbroadcast(gy * w, ad.shape) if self.next[0] is not None else None
        gb = unbroadcast(gy * (1 - w), bd.shape) if self.next[1] is not None else None
        return ga, gb


def _maxmin(op: str, a: Tensor, b: Any, is_max: bool) -> Tensor:
    a, b = _coerce(op, a, b)
    if not isinstance(b, Tensor):
        b = wrap(a._device.xp.asarray(b, dtype=a._data.dtype), a._device)
    ad, bd = a._data, b._data
    xp = a._device.xp
    fn = xp.maximum if is_max else xp.minimum
    out = wrap(_apply(op, lambda: fn(ad, bd), a, b), a._device)
    if (a._rg or b._rg) and _gm.enabled:
        node = MaxMinBackward()
        node.saved = (ad, bd)
        node.is_max = is_max
        save_versions(node, a, b)
        record(node, out, a, b)
    return out


def maximum(a: Tensor, b: Any) -> Tensor:
    return _maxmin("maximum", a, b, True)


def minimum(a: Tensor, b: Any) -> Tensor:
    return _maxmin("minimum", a, b, False)


# ---- comparisons and logic (no gradient) --------------------------------------------------
def _compare(op: str, name: str) -> Any:
    def compare(a: Tensor, b: Any) -> Any:
        if (
            not isinstance(b, Tensor)
            and not isinstance(b, SCALARS)
            and (b is None or as_operand(op, a, b) is None)
        ):
            return NotImplemented
        a, b = _coerce(op, a, b)
        ad = a._data
        bd = b._data if isinstance(b, Tensor) else _scalar(ad, b)
        return wrap(_apply(op, lambda: getattr(ad, name)(bd), a, b), a._device)

    compare.__name__ = op
    compare.__qualname__ = op
    return compare


eq = _compare("eq", "__eq__")
ne = _compare("ne", "__ne__")
lt = _compare("lt", "__lt__")
le = _compare("le", "__le__")
gt = _compare("gt", "__gt__")
ge = _compare("ge", "__ge__")


def _logic(op: str, name: str) -> Any:
    def logic(a: Tensor, b: Any) -> Tensor:
        a, b = _coerce(op, a, b)
        if a._data.dtype.kind not in "biu":
            raise TypeError(f"{op}: needs bool or integer tensors, got {a.dtype}")
        ad = a._data
        bd = b._data if isinstance(b, Tensor) else b
        return wrap(_apply(op, lambda: getattr(a._device.xp, name)(ad, bd), a, b), a._device)

    logic.__name__ = op
    logic.__qualname__ = op
    return logic


logical_and = _logic("and", "bitwise_and")
logical_or = _logic("or", "bitwise_or")
logical_xor = _logic("xor", "bitwise_xor")


def logical_not(a: Tensor) -> Tensor:
    if a._data.dtype.kind not in "biu":
        raise TypeError(f"invert: needs a bool or integer tensor, got {a.dtype}")
    return wrap(~a._data, a._device)


# ---- unary --------------------------------------------------------------------------------
class NegBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (-gy,)


def neg(a: Tensor) -> Tensor:
    if a._data.dtype == dtypes.bool_.np:
        raise TypeError("neg: negation of a bool tensor is not supported; use ~ instead")
    out = wrap(-a._data, a._device)
    if a._rg and _gm.enabled:
        record(NegBackward(), out, a)
    return out


def positive(a: Tensor) -> Tensor:
    return a


def _keep_output(cls: type[Node], out: Tensor, a: Tensor) -> Tensor:
    """Record a unary op whose backward needs only its output (exp, tanh, sigmoid, ...)."""
    if a._rg and _gm.enabled:
        node = cls()
        node.saved = (out._data,)
        save_versions(node, out)
        record(node, out, a)
    return out


def _keep_input(node: Node, out: Tensor, a: Tensor) -> Tensor:
    """Record a unary op whose backward needs its input (log, abs, clamp)."""
    node.saved = (a._data,)
    save_versions(node, a)
    return record(node, out, a)


class AbsBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (ad,) = self.saved  # type: ignore[misc]
        return (gy * self.xp.sign(ad),)


def abs(a: Tensor) -> Tensor:
    if a._data.dtype == dtypes.bool_.np:
        raise TypeError("abs: not supported for bool tensors")
    xp = a._device.xp
    out = wrap(xp.abs(a._data), a._device)
    if a._rg and _gm.enabled:
        node = AbsBackward()
        node.xp = xp
        return _keep_input(node, out, a)
    return out


class ExpBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy * self.saved[0],)  # type: ignore[index]


def exp(a: Tensor) -> Tensor:
    if _ac.on:
        (a,) = _autocast("exp", a)
    a = to_float(a)
    return _keep_output(ExpBackward, wrap(a._device.xp.exp(a._data), a._device), a)


class LogBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy / self.saved[0],)  # type: ignore[index]


def log(a: Tensor) -> Tensor:
    if _ac.on:
        (a,) = _autocast("log", a)
    a = to_float(a)
    out = wrap(a._device.xp.log(a._data), a._device)
    return _keep_input(LogBackward(), out, a) if a._rg and _gm.enabled else out


class SqrtBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy / (2 * self.saved[0]),)  # type: ignore[index]


def sqrt(a: Tensor) -> Tensor:
    a = to_float(a)
    return _keep_output(SqrtBackward, wrap(a._device.xp.sqrt(a._data), a._device), a)


class RsqrtBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        return (gy * (-0.5 * y * y * y),)


def rsqrt(a: Tensor) -> Tensor:
    if _ac.on:
        (a,) = _autocast("rsqrt", a)
    a = to_float(a)
    xp = a._device.xp
    ad = a._data
    return _keep_output(RsqrtBackward, wrap(1 / xp.sqrt(ad), a._device), a)


class TanhBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        return (gy * (1 - y * y),)


def tanh(a: Tensor) -> Tensor:
    a = to_float(a)
    return _keep_output(TanhBackward, wrap(a._device.xp.tanh(a._data), a._device), a)


class SigmoidBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        return (gy * (y * (1 - y)),)


def sigmoid(a: Tensor) -> Tensor:
    a = to_float(a)
    xp = a._device.xp
    ad = a._data
    # exp of -|x| never overflows, and each branch keeps full relative precision.
    e = xp.exp(-xp.abs(ad))
    y = xp.where(ad >= 0, 1 / (1 + e), e / (1 + e)).astype(ad.dtype, copy=False)
    return _keep_output(SigmoidBackward, wrap(y, a._device), a)


class ReluBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (y,) = self.saved  # type: ignore[misc]
        return (gy * (y > 0),)


def relu(a: Tensor) -> Tensor:
    ad = a._data
    if ad.dtype == dtypes.bool_.np:
        raise TypeError("relu: not supported for bool tensors")
    out = wrap(a._device.xp.maximum(ad, _scalar(ad, 0)), a._device)
    return _keep_output(ReluBackward, out, a)


# ---- clamp / where / masked_fill ----------------------------------------------------------
class ClampBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (ad,) = self.saved  # type: ignore[misc]
        lo, hi = self.bounds
        if lo is None:
            keep = ad <= hi
        elif hi is None:
            keep = ad >= lo
        else:
            keep = (ad >= lo) & (ad <= hi)
        return (gy * keep,)


def clamp(a: Tensor, min: Any = None, max: Any = None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = a
        if min is not None:
            out = where(out < min, min, out)
        if max is not None:
            out = where(out > max, max, out)
        return out
    for bound in (min, max):
        if bound is not None:
            a = promote_pair(a, bound)[0]
    ad = a._data
    lo = None if min is None else _scalar(ad, min)
    hi = None if max is None else _scalar(ad, max)
    xp = a._device.xp
    if lo is not None and hi is not None and lo > hi:
        y = xp.full(ad.shape, hi, dtype=ad.dtype)  # PyTorch: min > max gives max everywhere
    elif lo is None:
        y = xp.minimum(ad, hi)
    elif hi is None:
        y = xp.maximum(ad, lo)
    else:
        y = xp.minimum(xp.maximum(ad, lo), hi)
    out = wrap(y, a._device)
    if a._rg and _gm.enabled:
        node = ClampBackward()
        node.bounds = (lo, hi)
        _keep_input(node, out, a)
    return out


class WhereBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, Any]:
        (cond,) = self.saved  # type: ignore[misc]
        xp = self.xp
        sx, sy = self.shapes
        zero = gy.dtype.type(0)
        gx = unbroadcast(xp.where(cond, gy, zero), sx) if self.next[0] is not None else None
        gyy = None
        if len(self.next) > 1 and self.next[1] is not None:
            gyy = unbroadcast(xp.where(cond, zero, gy), sy)
        return gx, gyy


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    if not isinstance(condition, Tensor):
        raise TypeError("where: condition must be a bool Tensor")
    if condition._data.dtype != dtypes.bool_.np:
        raise TypeError(f"where: condition must be a bool tensor, got {condition.dtype}")
    if not isinstance(input, Tensor):
        if not isinstance(other, Tensor):
            raise TypeError("where: at least one of input and other must be a Tensor")
        input, other = other, input
        swap = True
    else:
        swap = False
    x, y = _coerce("where", input, other)
    check_device("where", condition, x)
    if not isinstance(y, Tensor):
        y = wrap(x._device.xp.asarray(y, dtype=x._data.dtype), x._device)
    if swap:
        x, y = y, x
    xp = x._device.xp
    cd, xd, yd = condition._data, x._data, y._data
    out = wrap(_apply("where", lambda: xp.where(cd, xd, yd), condition, x, y), x._device)
    if (x._rg or y._rg) and _gm.enabled:
        node = WhereBackward()
        node.saved = (cd,)
        node.xp = xp
        node.shapes = (xd.shape, yd.shape)
        save_versions(node, condition)
        record(node, out, x, y)
    return out


def where_method(a: Tensor, condition: Tensor, other: Any) -> Tensor:
    return where(condition, a, other)


class MaskedFillBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (mask,) = self.saved  # type: ignore[misc]
        return (self.xp.where(mask, gy.dtype.type(0), gy),)


def masked_fill(a: Tensor, mask: Tensor, value: Any) -> Tensor:
    if not isinstance(mask, Tensor) or mask._data.dtype != dtypes.bool_.np:
        raise TypeError("masked_fill: mask must be a bool Tensor")
    check_device("masked_fill", a, mask)
    if isinstance(value, Tensor):
        if value._data.ndim != 0:
            raise ShapeError(f"masked_fill: value must be a 0-d tensor, got shape {value.shape}")
        fill = value._data.astype(a._data.dtype)
    else:
        fill = a._data.dtype.type(value)
    xp = a._device.xp
    ad, md = a._data, mask._data
    y = _apply("masked_fill", lambda: xp.where(md, fill, ad), a, mask)
    if y.shape != ad.shape:
        raise shape_error("masked_fill", ad.shape, md.shape)
    out = wrap(y.astype(ad.dtype, copy=False), a._device)
    if a._rg and _gm.enabled:
        node = MaskedFillBackward()
        node.saved = (md,)
        node.xp = xp
        save_versions(node, mask)
        record(node, out, a)
    return out
