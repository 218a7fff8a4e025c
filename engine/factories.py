"""Tensor creation: from data, factories of a size, ranges, and random draws."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import dtypes
from engine.device import CPU, resolve
from engine.functions.common import parse_size
from engine.random import generator_or_default
from engine.tensor import Tensor, wrap


def _finish(arr: Any, dev: Any, requires_grad: bool) -> Tensor:
    t = wrap(arr, dev)
    if requires_grad:
        t.requires_grad = True  # the setter refuses non-float dtypes, as PyTorch does
    return t


def _place(host: np.ndarray, device: Any) -> tuple[Any, Any]:
    dev = resolve(device)
    return dev.ops.from_host(host), dev


def _infer_np(data: Any) -> np.ndarray:
    """Python data as an array with PyTorch's inference: floats become the default dtype."""
    try:
        arr = np.asarray(data)
    except ValueError as e:
        raise ValueError(
            f"tensor: data is not a regular nested sequence of numbers ({e})"
        ) from None
    if arr.dtype == object:
        raise TypeError(f"tensor: could not infer a dtype from data of type {type(data).__name__}")
    if isinstance(data, np.ndarray | np.generic):
        return arr  # NumPy data keeps its dtype; callers reject the ones the engine lacks
    if arr.dtype.kind == "f":
        arr = arr.astype(dtypes.get_default_dtype().np)
    elif arr.dtype.kind in "iu" and arr.dtype != np.int32:
        arr = arr.astype(np.int64)
    return arr


def _cuda_array_as_tensor(data: Any) -> Any:
    """A CuPy (or other __cuda_array_interface__) array as a tensor sharing it, else data."""
    if not hasattr(data, "__cuda_array_interface__") or isinstance(data, Tensor):
        return data
    dtypes.from_np(data.dtype)
    return wrap(data, resolve(f"cuda:{data.device.id}"))


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of `data` (nested sequences, NumPy/CuPy arrays, tensors)."""
    data = _cuda_array_as_tensor(data)
    if isinstance(data, Tensor):
        src = data.detach()
        out = src.to(
            device=device if device is not None else src.device,
            dtype=dtype if dtype is not None else src.dtype,
            copy=True,
        )
        return _finish(out._data, out._device, requires_grad)
    arr = _infer_np(data)
    if dtype is not None:
        arr = arr.astype(dtypes.as_dtype(dtype).np)
    else:
        dtypes.from_np(arr.dtype)  # fail early on dtypes the engine lacks
    arr, dev = _place(np.array(arr, copy=True), device)
    return _finish(arr, dev, requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like tensor() but shares memory where dtype and device already match."""
    data = _cuda_array_as_tensor(data)
    if isinstance(data, Tensor):
        return data.to(
            device=device if device is not None else data.device,
            dtype=dtype if dtype is not None else data.dtype,
        )
    if isinstance(data, np.ndarray):
        arr = data if dtype is None else data.astype(dtypes.as_dtype(dtype).np, copy=False)
        dtypes.from_np(arr.dtype)
    else:
        arr = _infer_np(data)
        if dtype is not None:
            arr = arr.astype(dtypes.as_dtype(dtype).np)
    arr, dev = _place(arr, device)
    return wrap(arr, dev)


def from_numpy(a: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with `a`."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(a).__name__}")
    dtypes.from_np(a.dtype)
    return wrap(a, CPU)  # shares a's memory, so never the default device


def _dtype(dtype: Any, default: dtypes.dtype | None = None) -> dtypes.dtype:
    if dtype is None:
        return default or dtypes.get_default_dtype()
    return dtypes.as_dtype(dtype)


def _make(
    fill: Any,
    size: Sequence[Any],
    dtype: Any,
    device: Any,
    requires_grad: bool,
    op: str,
    default: dtypes.dtype | None = None,
) -> Tensor:
    shape = parse_size(op, tuple(size))
    if any(n < 0 for n in shape):
        raise ValueError(f"{op}: negative dimension in size {shape}")
    d = _dtype(dtype, default)
    dev = resolve(device)
    xp = dev.xp
    with dev.ops.on():
        if fill is None:
            arr = xp.empty(shape, dtype=d.np)
        elif fill == 0:
            arr = xp.zeros(shape, dtype=d.np)
        else:
            arr = xp.full(shape, fill, dtype=d.np)
    return _finish(arr, dev, requires_grad)


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(0, size, dtype, device, requires_grad, "zeros")


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(1, size, dtype, device, requires_grad, "ones")


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _make(None, size, dtype, device, requires_grad, "empty")


def full(
    size: Any,
    fill_value: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if not isinstance(fill_value, int | float | bool | np.number | np.bool_):
        raise TypeError(f"full: fill_value must be a number, got {type(fill_value).__name__}")
    default = dtypes.scalar_dtype(fill_value)
    return _make(
        fill_value,
        (size,) if isinstance(size, int) else tuple(size),
        dtype,
        device,
        requires_grad,
        "full",
        default,
    )


def _like(t: Tensor, fill: Any, dtype: Any, device: Any, requires_grad: bool, op: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(t).__name__}")
    return _make(
        fill,
        t.shape,
        dtype if dtype is not None else t.dtype,
        device if device is not None else t.device,
        requires_grad,
        op,
    )


def zeros_like(
    t: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _like(t, 0, dtype, device, requires_grad, "zeros_like")


def ones_like(
    t: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _like(t, 1, dtype, device, requires_grad, "ones_like")


def empty_like(
    t: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _like(t, None, dtype, device, requires_grad, "empty_like")


def full_like(
    t: Tensor,
    fill_value: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    return _like(t, fill_value, dtype, device, requires_grad, "full_like")


def arange(
    start: Any,
    end: Any = None,
    step: Any = 1,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    is_float = any(isinstance(v, float) for v in (start, end, step))
    d = _dtype(dtype, None if is_float else dtypes.int64)
    n = max(math.ceil((end - start) / step), 0)
    dev = resolve(device)
    xp = dev.xp
    with dev.ops.on():  # made where it lives: no host array copied to a GPU
        # values as PyTorch computes them: start + i * step in double, then cast
        arr = (
            xp.arange(n, dtype=np.float64) * step + start
            if is_float or d.is_floating_point
            else xp.arange(start, end, step, dtype=np.int64)
        )
        arr = arr.astype(d.np, copy=False)
    return _finish(arr, dev, requires_grad)


def linspace(
    start: float,
    end: float,
    steps: int,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    if steps < 0:
        raise ValueError(f"linspace: number of steps must be non-negative, got {steps}")
    d = _dtype(dtype)
    dev = resolve(device)
    with dev.ops.on():
        arr = dev.xp.linspace(float(start), float(end), int(steps), dtype=np.float64)
        arr = arr.astype(d.np, copy=False)
    return _finish(arr, dev, requires_grad)


def eye(
    n: int,
    m: int | None = None,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    if n < 0 or (m is not None and m < 0):
        raise ValueError(f"eye: sizes must be non-negative, got n={n}, m={m}")
    d = _dtype(dtype)
    dev = resolve(device)
    with dev.ops.on():
        arr = dev.xp.eye(n, n if m is None else m, dtype=d.np)
    return _finish(arr, dev, requires_grad)


def _random(
    op: str,
    size: tuple[Any, ...],
    dtype: Any,
    device: Any,
    requires_grad: bool,
    generator: Any,
    draw: str,
) -> Tensor:
    shape = parse_size(op, size)
    d = _dtype(dtype)
    if not d.is_floating_point:
        raise TypeError(f"{op}: needs a floating-point dtype, got {d}")
    dev = resolve(device)
    arr = dev.ops.random(generator_or_default(generator), draw, shape, d, 0.0, 1.0)
    return _finish(arr, dev, requires_grad)


def rand(
    *size: Any,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    return _random("rand", size, dtype, device, requires_grad, generator, "uniform")


def randn(
    *size: Any,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    return _random("randn", size, dtype, device, requires_grad, generator, "normal")


def _random_like(
    fn: Any, t: Tensor, generator: Any, dtype: Any, device: Any, requires_grad: bool
) -> Tensor:
    return fn(
        t.shape,
        generator=generator,
        dtype=dtype or t.dtype,
        device=device or t.device,
        requires_grad=requires_grad,
    )


def rand_like(
    t: Tensor,
    *,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    return _random_like(rand, t, generator, dtype, device, requires_grad)


def randn_like(
    t: Tensor,
    *,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    return _random_like(randn, t, generator, dtype, device, requires_grad)


def randint(
    *args: Any,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
    size: Any = None,
) -> Tensor:
    """randint(high, size) or randint(low, high, size), as PyTorch's."""
    if size is not None:
        args = (*args, size)
    if len(args) == 2:
        low, high, shape = 0, args[0], args[1]
    elif len(args) == 3:
        low, high, shape = args
    else:
        raise TypeError("randint: expected randint(high, size) or randint(low, high, size)")
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    d = _dtype(dtype, dtypes.int64)
    dev = resolve(device)
    gen = generator_or_default(generator)
    arr = dev.ops.randint(gen, int(low), int(high), parse_size("randint", (shape,)), d.np)
    return _finish(arr, dev, requires_grad)


def randperm(
    n: int,
    *,
    generator: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    d = _dtype(dtype, dtypes.int64)
    dev = resolve(device)
    arr = dev.ops.randperm(generator_or_default(generator), int(n), d.np)
    return _finish(arr, dev, requires_grad)
