"""Activations: relu, gelu (exact and tanh), silu, leaky_relu, tanh, sigmoid, softmax.

Each is one op with one node; gelu and silu keep what their backward reads (the normal
CDF, the sigmoid) from the forward rather than recomputing it. 16-bit inputs compute in
float32 and round once.
"""

from __future__ import annotations

import math
from typing import Any

from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.functions import arith, reduce
from engine.functions.common import Tensor, record, wrap
from engine.nn.functional._layer_common import floating, maybe_inplace, narrow, wide

_INV_SQRT2 = 1 / math.sqrt(2)
_TANH_K = math.sqrt(2 / math.pi)
_TANH_C = 0.044715


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return maybe_inplace(input, arith.relu(input), inplace)


def tanh(input: Tensor) -> Tensor:
    return arith.tanh(input)


def sigmoid(input: Tensor) -> Tensor:
    return arith.sigmoid(input)


def softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None
) -> Tensor:
    return reduce.softmax(input, dim, dtype)


def log_softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None
) -> Tensor:
    return reduce.log_softmax(input, dim, dtype)


class GeluBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        x, cdf = self.saved  # type: ignore[misc]
        g = wide(gy)
        if self.approximate:  # cdf holds tanh(k(x + c x^3)) here
            t = cdf
            d = 0.5 * (1 + t) + (0.5 * x) * (1 - t * t) * (_TANH_K * (1 + 3 * _TANH_C * x * x))
            return (narrow(g * d, gy.dtype),)
        return (narrow(self.ops.gelu_backward(g, x, cdf), gy.dtype),)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    floating("gelu", input)
    xd = input._data
    x = wide(xd)
    ops = input._device.ops
    if approximate == "tanh":
        aux = ops.xp.tanh(_TANH_K * (x + _TANH_C * (x * x * x)))
        y = 0.5 * x * (1 + aux)
    else:
        y, aux = ops.gelu(x)
    out = wrap(narrow(y, xd.dtype), input._device)
    if input._rg and _gm.enabled:
        node = GeluBackward()
        node.saved = (x, aux)
        node.ops = ops
        node.approximate = approximate == "tanh"
        save_versions(node, input)
        record(node, out, input)
    return out


class SiluBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        x, s = self.saved  # type: ignore[misc]
        return (narrow(self.ops.silu_backward(wide(gy), x, s), gy.dtype),)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    floating("silu", input)
    xd = input._data
    x = wide(xd)
    y, s = input._device.ops.silu(x)
    out = wrap(narrow(y, xd.dtype), input._device)
    if input._rg and _gm.enabled:
        node = SiluBackward()
        node.saved = (x, s)
        node.ops = input._device.ops
        save_versions(node, input)
        record(node, out, input)
    return maybe_inplace(input, out, inplace)


class LeakyReluBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (x,) = self.saved  # type: ignore[misc]
        return (self.xp.where(x > 0, gy, gy * self.slope),)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    floating("leaky_relu", input)
    xd = input._data
    xp = input._device.xp
    slope = xd.dtype.type(negative_slope)
    out = wrap(xp.where(xd > 0, xd, xd * slope), input._device)
    if input._rg and _gm.enabled:
        node = LeakyReluBackward()
        node.saved = (xd,)
        node.xp = xp
        node.slope = slope
        save_versions(node, input)
        record(node, out, input)
    return maybe_inplace(input, out, inplace)
