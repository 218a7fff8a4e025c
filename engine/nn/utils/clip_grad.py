"""Gradient clipping with PyTorch's formulas (torch.nn.utils.clip_grad, 2.6+ layout).

The norms stay on the gradients' device as 0-d arrays: clipping needs no host sync
(only `error_if_nonfinite=True` reads the total norm back, as PyTorch's does).
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from engine import dtypes
from engine.autograd import no_grad
from engine.device import device
from engine.tensor import Tensor, wrap

_LOW = frozenset((dtypes.float16.np, dtypes.bfloat16.np))


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(tensors, Tensor):
        return [tensors]
    is_generator = isinstance(tensors, types.GeneratorType)
    out = list(tensors)
    if is_generator and not out:
        warnings.warn(
            "`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3
        )
    return out


def _vector_norm(xp: Any, a: Any, p: float) -> Any:
    """torch.linalg.vector_norm of a flattened array, as a 0-d array on a's device."""
    wide = a.astype(dtypes.float32.np) if a.dtype in _LOW else a
    mag = xp.abs(wide.reshape(-1))
    if p == math.inf:
        out = mag.max() if mag.size else xp.zeros((), wide.dtype)
    elif p == -math.inf:
        out = mag.min() if mag.size else xp.full((), math.inf, wide.dtype)
    elif p == 0:
        out = (mag != 0).sum(dtype=wide.dtype)
    elif p == 1:
        out = mag.sum()
    elif p == 2:
        out = xp.sqrt((mag * mag).sum())
    else:
        out = (mag**p).sum() ** (1 / p)
    return xp.asarray(out).astype(a.dtype, copy=False)


def _moved(a: Any, source: device, target: device) -> Any:
    if source is target:
        return a
    host = source.ops.to_host(a)
    return host if target.type == "cpu" else target.ops.from_host(host)


def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """The norm of all the tensors' norms, i.e. the norm of them concatenated, on the
    first tensor's device. `foreach` is accepted for PyTorch's signature: one path serves."""
    ts = _as_list(tensors)
    p = float(norm_type)
    if not ts:
        from engine.factories import tensor

        return tensor(0.0)
    first = ts[0]._device
    xp = first.xp
    norms = [_moved(_vector_norm(t._device.xp, t._data, p), t._device, first) for t in ts]
    common = norms[0].dtype
    for n in norms[1:]:
        common = np.promote_types(common, n.dtype)
    total = _vector_norm(xp, xp.stack([n.astype(common, copy=False) for n in norms]), p)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is non-finite, so "
            "it cannot be clipped. To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    return wrap(total, first)


def clip_grads_with_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    total_norm: Tensor,
    foreach: bool | None = None,
) -> None:
    """Scale every gradient by min(1, max_norm / (total_norm + 1e-6)), in place."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    tn = total_norm._data
    xp = total_norm._device.xp
    # max_norm as a scalar of tn's dtype, not an array: on CUDA no host-to-device copy
    coef = xp.minimum(tn.dtype.type(max_norm) / (tn + tn.dtype.type(1e-6)), 1)
    # the coefficient moved and cast once per device and dtype, not once per gradient
    coefs: dict[tuple[device, Any], Tensor] = {}
    with no_grad():
        for g in grads:
            key = (g._device, g._data.dtype)
            c = coefs.get(key)
            if c is None:
                moved = _moved(coef, total_norm._device, g._device).astype(key[1])
                c = coefs[key] = wrap(moved, g._device)
            g.mul_(c)


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Clip the gradients' joint norm to max_norm in place; returns the norm before."""
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_value_(
    parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient to [-clip_value, clip_value] in place."""
    v = float(clip_value)
    with no_grad():
        for p in _as_list(parameters):
            if p.grad is not None:
                p.grad.clamp_(-v, v)
