"""layer_norm and batch_norm, each one op with one node saving the normalised input and
1/std; backward by the standard closed form. 16-bit inputs normalise in float32."""

from __future__ import annotations

import math
from typing import Any

from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import norm_args as _autocast_norm
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.backends.numpy_ops import affine as _affine
from engine.errors import ShapeError
from engine.functions.common import Tensor, check_device, record, wrap
from engine.functions.convert import to_dtype
from engine.functions.index import bump
from engine.nn.functional._layer_common import floating, narrow, wide


def _wanted(node: Node) -> tuple[bool, bool]:
    """Whether the weight and the bias (each optional, in that order after x) need grads."""
    has_w, has_b = node.has
    nx = node.next
    return has_w and nx[1] is not None, has_b and nx[1 + has_w] is not None


def _grads(gx: Any, gw: Any, gb: Any, node: Node) -> tuple[Any, ...]:
    has_w, has_b = node.has
    return (gx, *((gw,) if has_w else ()), *((gb,) if has_b else ()))


# ---- layer_norm ---------------------------------------------------------------------------
class LayerNormBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        xhat, rstd, w = self.saved  # type: ignore[misc]
        want_w, want_b = _wanted(self)
        g = wide(gy).reshape(xhat.shape)
        want_x = self.next[0] is not None
        gx, gw, gb = self.ops.layer_norm_rows_backward(g, xhat, rstd, w, want_x, want_w, want_b)
        if gx is not None:
            gx = narrow(gx, gy.dtype).reshape(gy.shape)
        if gw is not None:
            gw = narrow(gw, gy.dtype).reshape(self.wshape)
        if gb is not None:
            gb = narrow(gb, gy.dtype).reshape(self.wshape)
        return _grads(gx, gw, gb, self)


def layer_norm(
    input: Tensor,
    normalized_shape: Any,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    if _ac.on:
        (input, weight, bias), back = _autocast_norm("layer_norm", input, weight, bias)
        if back is not None:  # normalised in float32, rounded once to the input's dtype
            return to_dtype(layer_norm(input, normalized_shape, weight, bias, eps), back)
    floating("layer_norm", input, weight, bias)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    xd = input._data
    k = len(shape)
    if k == 0 or xd.shape[xd.ndim - k :] != shape or xd.ndim < k:
        raise ShapeError(
            f"layer_norm: given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(map(str, shape))}], but got input of size {list(xd.shape)}"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p._data.shape != shape:
            raise ShapeError(
                f"layer_norm: {name} of shape {p.shape} for normalized_shape {list(shape)}"
            )
    ops = input._device.ops
    n = math.prod(shape)
    x = wide(xd).reshape(-1, n)
    w = wide(weight._data).reshape(-1) if weight is not None else None
    b = None if bias is None else wide(bias._data).reshape(-1)
    y, xhat, rstd = ops.layer_norm_rows(x, w, b, eps)
    out = wrap(narrow(y, xd.dtype).reshape(xd.shape), input._device)
    params = [t for t in (weight, bias) if t is not None]
    if _gm.enabled and any(t._rg for t in (input, *params)):
        node = LayerNormBackward()
        node.saved = (xhat, rstd, w)
        node.ops = ops
        node.wshape = shape
        node.has = (weight is not None, bias is not None)
        if weight is not None:  # for float32, w is the weight's own array
            save_versions(node, weight)
        record(node, out, input, *params)
    return out


# ---- batch_norm ---------------------------------------------------------------------------
class BatchNormBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        xhat, rstd, w = self.saved  # type: ignore[misc]
        axes = self.axes
        want_w, want_b = _wanted(self)
        want_x = self.next[0] is not None
        g = wide(gy)
        gx = gw = gb = None
        s1 = s2 = None
        if (want_x and self.batch_stats) or want_w:
            s2 = (g * xhat).sum(axis=axes, keepdims=True)
        if (want_x and self.batch_stats) or want_b:
            s1 = g.sum(axis=axes, keepdims=True)
        if want_x:
            scale = rstd if w is None else rstd * w
            if self.batch_stats:
                m = self.count
                gx = (g - s1 / m - xhat * (s2 / m)) * scale
            else:  # running statistics are constants: the op is affine in x
                gx = g * scale
            gx = narrow(gx, gy.dtype)
        if want_w:
            gw = narrow(s2.reshape(-1), gy.dtype)  # type: ignore[union-attr]
        if want_b:
            gb = narrow(s1.reshape(-1), gy.dtype)  # type: ignore[union-attr]
        return _grads(gx, gw, gb, self)


def _update(stat: Tensor, value: Any, momentum: float) -> None:
    """running = (1 - momentum) * running + momentum * value, in place, as PyTorch's."""
    sd = stat._data
    sd *= 1 - momentum
    sd += (momentum * value).astype(sd.dtype, copy=False)
    bump(stat)


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    if _ac.on:
        (input, weight, bias), back = _autocast_norm("batch_norm", input, weight, bias)
        if back is not None:  # normalised in float32, rounded once to the input's dtype
            out = batch_norm(
                input, running_mean, running_var, weight, bias, training, momentum, eps
            )
            return to_dtype(out, back)
    floating("batch_norm", input)
    xd = input._data
    if xd.ndim < 2:
        raise ShapeError(f"batch_norm: expected an input of at least 2 dims, got {xd.shape}")
    c = xd.shape[1]
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if t is None:
            continue
        check_device("batch_norm", input, t)
        if t._data.shape != (c,):
            raise ShapeError(
                f"batch_norm: {name} of shape {t.shape} for an input with {c} channels "
                f"(shape {input.shape})"
            )
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must be given in eval mode")
    xp = input._device.xp
    axes = (0, *range(2, xd.ndim))
    bshape = (1, c) + (1,) * (xd.ndim - 2)
    x = wide(xd)
    count = xd.size // c if c else 0
    if training:
        if count <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size "
                f"{list(xd.shape)}"
            )
        mean = x.mean(axis=axes, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=axes, keepdims=True)
        rstd = 1 / xp.sqrt(var + eps)
        xhat = xc * rstd
        if running_mean is not None:
            _update(running_mean, mean.reshape(-1), momentum)
        if running_var is not None:
            _update(running_var, var.reshape(-1) * (count / (count - 1)), momentum)
    else:
        rm = wide(running_mean._data).reshape(bshape)  # type: ignore[union-attr]
        rv = wide(running_var._data).reshape(bshape)  # type: ignore[union-attr]
        rstd = 1 / xp.sqrt(rv + eps)
        xhat = (x - rm) * rstd
    w = wide(weight._data).reshape(bshape) if weight is not None else None
    y = _affine(xhat, w, None if bias is None else wide(bias._data).reshape(bshape))
    out = wrap(narrow(y, xd.dtype), input._device)
    params = [t for t in (weight, bias) if t is not None]
    if _gm.enabled and any(t._rg for t in (input, *params)):
        node = BatchNormBackward()
        node.has = (weight is not None, bias is not None)
        node.saved = (xhat, rstd, w)
        node.axes = axes
        node.count = count
        node.batch_stats = training
        if weight is not None:  # for float32, w is the weight's own array
            save_versions(node, weight)
        record(node, out, input, *params)
    return out
