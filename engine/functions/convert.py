"""Moving tensors between dtypes and devices, differentiably."""

from __future__ import annotations

from typing import Any

from engine import dtypes
from engine.autograd import Node
from engine.autograd import grad_mode as _gm
from engine.device import device, resolve
from engine.functions.common import Tensor, record, wrap


class CastBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (gy.astype(self.dtype),)


def to_dtype(a: Tensor, d: dtypes.dtype, copy: bool = False) -> Tensor:
    ad = a._data
    if ad.dtype == d.np and not copy:
        return a
    out = wrap(ad.astype(d.np), a._device)
    if a._rg and _gm.enabled and d.is_floating_point:
        node = CastBackward()
        node.dtype = ad.dtype
        record(node, out, a)
    return out


class TransferBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        return (_move(gy, self.source, self.target),)


def _move(arr: Any, source: device, target: device) -> Any:
    if target.type == "cpu":
        return source.ops.to_host(arr)
    host = arr if source.type == "cpu" else source.ops.to_host(arr)
    return target.ops.from_host(host)


def to_device(a: Tensor, dev: Any, copy: bool = False) -> Tensor:
    target = resolve(dev)
    if target is a._device:
        return to_dtype(a, a.dtype, copy=True) if copy else a
    out = wrap(_move(a._data, a._device, target), target)
    if a._rg and _gm.enabled:
        node = TransferBackward()
        node.source, node.target = target, a._device
        record(node, out, a)
    return out


def to(a: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """to(dtype) | to(device, dtype=None) | to(tensor), with non_blocking= and copy=."""
    target_device = kwargs.pop("device", None)
    target_dtype = kwargs.pop("dtype", None)
    copy = bool(kwargs.pop("copy", False))
    kwargs.pop("non_blocking", None)
    kwargs.pop("memory_format", None)
    if kwargs:
        raise TypeError(f"to: unexpected keyword arguments {sorted(kwargs)}")
    for arg in args:
        if isinstance(arg, Tensor):
            target_device, target_dtype = arg._device, arg.dtype
        elif isinstance(arg, dtypes.dtype):
            target_dtype = arg
        elif isinstance(arg, str | device | int) and not isinstance(arg, bool):
            target_device = arg
        elif arg is not None:
            raise TypeError(f"to: expected a device, dtype or tensor, got {arg!r}")
    out = a
    if target_dtype is not None:
        out = to_dtype(out, dtypes.as_dtype(target_dtype), copy=copy)
        copy = copy and out is a
    if target_device is not None:
        out = to_device(out, target_device, copy=copy)
    elif copy and out is a:
        out = to_dtype(a, a.dtype, copy=True)
    return out


def cpu(a: Tensor) -> Tensor:
    return to_device(a, "cpu")


def cuda(a: Tensor, device: Any = None, non_blocking: bool = False) -> Tensor:
    if device is None:
        return to_device(a, "cuda")
    return to_device(a, device if not isinstance(device, int) else f"cuda:{device}")


def type_as(a: Tensor, other: Tensor) -> Tensor:
    return to_dtype(a, other.dtype)


def caster(d: dtypes.dtype, name: str) -> Any:
    """The method `Tensor.<name>()`: a differentiable cast to d."""

    def cast_to(a: Tensor) -> Tensor:
        return to_dtype(a, d)

    cast_to.__name__ = cast_to.__qualname__ = name
    return cast_to
