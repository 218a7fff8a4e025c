"""In-place ops. They take part in no graph: on a tensor that requires grad they work
only under no_grad (where optimizers, initialisers and scalers use them), and each
bumps the version counter so a graph that saved the old values refuses to backward."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import dtypes
from engine.errors import ShapeError
from engine.functions.common import SCALARS, Tensor, check_device
from engine.functions.index import bump, writable
from engine.random import generator_or_default

_BF16 = dtypes.bfloat16.np


def _value(op: str, a: Tensor, other: Any) -> Any:
    if isinstance(other, Tensor):
        check_device(op, a, other)
        return other._data
    if isinstance(other, (SCALARS, np.generic)):
        return a._data.dtype.type(other) if a._data.dtype is _BF16 else other
    if isinstance(other, np.ndarray):
        return a._device.ops.from_host(other)
    raise TypeError(f"{op}: unsupported operand type {type(other).__name__}")


def _run(op: str, a: Tensor, ufunc: Any, *operands: Any) -> Tensor:
    ad = writable(op, a)
    try:
        ufunc(ad, *operands, out=ad)
    except ValueError:
        shapes = [getattr(o, "shape", ()) for o in operands]
        raise ShapeError(
            f"{op}: operand of shape {shapes[0] if shapes else ()} cannot be written into "
            f"a tensor of shape {ad.shape}"
        ) from None
    except TypeError:
        kinds = ", ".join(str(getattr(o, "dtype", None) or type(o).__name__) for o in operands)
        raise RuntimeError(
            f"{op}: result type can't be cast to the desired output type {a.dtype} "
            f"(operand {kinds}); an in-place op keeps the tensor's dtype"
        ) from None
    bump(a)
    return a


def _scaled(op: str, a: Tensor, other: Any, alpha: Any) -> Any:
    v = _value(op, a, other)
    return v if alpha == 1 else v * alpha


def add_(a: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
    return _run("add_", a, a._device.xp.add, _scaled("add_", a, other, alpha))


def sub_(a: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
    return _run("sub_", a, a._device.xp.subtract, _scaled("sub_", a, other, alpha))


def mul_(a: Tensor, other: Any) -> Tensor:
    return _run("mul_", a, a._device.xp.multiply, _value("mul_", a, other))


def div_(a: Tensor, other: Any) -> Tensor:
    return _run("div_", a, a._device.xp.true_divide, _value("div_", a, other))


def addcmul_(a: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Any = 1) -> Tensor:
    prod = _value("addcmul_", a, tensor1) * _value("addcmul_", a, tensor2)
    return _run("addcmul_", a, a._device.xp.add, prod if value == 1 else prod * value)


def addcdiv_(a: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Any = 1) -> Tensor:
    q = _value("addcdiv_", a, tensor1) / _value("addcdiv_", a, tensor2)
    return _run("addcdiv_", a, a._device.xp.add, q if value == 1 else q * value)


def clamp_(a: Tensor, min: Any = None, max: Any = None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clamp_: at least one of min and max must be given")
    xp = a._device.xp
    if min is not None:
        _run("clamp_", a, xp.maximum, _value("clamp_", a, min))
    if max is not None:
        _run("clamp_", a, xp.minimum, _value("clamp_", a, max))
    return a


def _assign(op: str, a: Tensor, value: Any) -> Tensor:
    ad = writable(op, a)
    try:
        ad[...] = value
    except ValueError:
        raise ShapeError(
            f"{op}: source of shape {getattr(value, 'shape', ())} does not broadcast to "
            f"the tensor's shape {ad.shape}"
        ) from None
    bump(a)
    return a


def copy_(a: Tensor, src: Any, non_blocking: bool = False) -> Tensor:
    if isinstance(src, Tensor) and src._device is not a._device:
        from engine.functions.convert import to_device

        src = to_device(src.detach(), a._device)
    return _assign("copy_", a, _value("copy_", a, src))


def fill_(a: Tensor, value: Any) -> Tensor:
    if isinstance(value, Tensor) and value._data.ndim != 0:
        raise ShapeError(f"fill_: value must be a number or 0-d tensor, got shape {value.shape}")
    return _assign("fill_", a, _value("fill_", a, value))


def zero_(a: Tensor) -> Tensor:
    return _assign("zero_", a, 0)


def _random_fill(op: str, a: Tensor, kind: str, p0: float, p1: float, generator: Any) -> Tensor:
    d = a.dtype
    if not d.is_floating_point:
        raise TypeError(f"{op}: needs a floating-point tensor, got {d}")
    gen = generator_or_default(generator)
    return _assign(op, a, a._device.ops.random(gen, kind, a._data.shape, d, p0, p1))


def uniform_(a: Tensor, a_low: float = 0.0, b: float = 1.0, *, generator: Any = None) -> Tensor:
    return _random_fill("uniform_", a, "uniform", a_low, b, generator)


def normal_(a: Tensor, mean: float = 0.0, std: float = 1.0, *, generator: Any = None) -> Tensor:
    return _random_fill("normal_", a, "normal", mean, std, generator)


def iadd(a: Tensor, other: Any) -> Tensor:
    return add_(a, other)


def isub(a: Tensor, other: Any) -> Tensor:
    return sub_(a, other)


def imul(a: Tensor, other: Any) -> Tensor:
    return mul_(a, other)


def itruediv(a: Tensor, other: Any) -> Tensor:
    return div_(a, other)
