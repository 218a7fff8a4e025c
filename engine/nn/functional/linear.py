"""`linear`: x @ W.T + b as one op with one node (one GEMM each way, batch dims flattened),
and `linear_act`: act(x @ W.T + b) as one op, the bias and activation in one pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import dtypes
from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.errors import ShapeError
from engine.functions.common import Tensor, record, wrap
from engine.nn.functional import activation as _act
from engine.nn.functional._layer_common import floating, gemm


def _linear_grads(node: Node, gy: Any, x: Any, w: Any) -> tuple[Any, ...]:
    """(gx, gw, gb) of y = x @ w.T + b for the gradient gy of y, each None where unwanted."""
    xp, nx = node.xp, node.next
    g2 = gy.reshape(-1, w.shape[0])
    gx = gw = gb = None
    if nx[0] is not None:
        gx = gemm(xp, g2, w).reshape(x.shape)
    if nx[1] is not None:
        gw = gemm(xp, g2.T, x.reshape(-1, w.shape[1]))
    if len(nx) > 2 and nx[2] is not None:
        gb = g2.sum(axis=0, dtype=node.acc).astype(gy.dtype, copy=False)
    return gx, gw, gb


class LinearBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        x, w = self.saved  # type: ignore[misc]
        return _linear_grads(self, gy, x, w)


class LinearActBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        x, w, aux = self.saved  # type: ignore[misc]
        return _linear_grads(self, self.ops.bias_act_backward(gy, aux, self.act), x, w)


def _checked(input: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Any, Any]:
    """The input's and weight's arrays, once their dtypes, devices and shapes fit."""
    floating("linear", input, weight, bias)
    xd, wd = input._data, weight._data
    if wd.ndim != 2 or xd.ndim == 0 or xd.shape[-1] != wd.shape[1]:
        raise ShapeError(
            f"linear: input of shape {xd.shape} and weight of shape {wd.shape} cannot be "
            f"multiplied (the input's last dim must equal weight.shape[1])"
        )
    if bias is not None and bias._data.shape != (wd.shape[0],):
        raise ShapeError(f"linear: bias of shape {bias.shape} for {wd.shape[0]} output features")
    return xd, wd


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = input @ weight.T + bias over the last dim of input, as torch.nn.functional.linear."""
    if _ac.on:
        input, weight, bias = _autocast("linear", input, weight, bias)
    xd, wd = _checked(input, weight, bias)
    n_out = wd.shape[0]
    xp = input._device.xp
    y = gemm(xp, xd.reshape(-1, wd.shape[1]), wd.T)
    if bias is not None:
        y += bias._data  # y is a fresh array: add in place, no second temporary
    out = wrap(y.reshape(*xd.shape[:-1], n_out), input._device)
    if _gm.enabled and (input._rg or weight._rg or (bias is not None and bias._rg)):
        node = LinearBackward()
        node.saved = (xd, wd)
        node.xp = xp
        # 16-bit bias gradients sum in float32, as PyTorch's CPU reductions accumulate.
        node.acc = "float32" if xd.dtype.itemsize == 2 else None
        save_versions(node, input, weight)
        _record(node, out, input, weight, bias)
    return out


def _record(node: Node, out: Tensor, input: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if bias is None:
        record(node, out, input, weight)
    else:
        record(node, out, input, weight, bias)


# The activations linear_act applies, as their own ops compute them one by one.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": _act.relu,
    "gelu": _act.gelu,  # exact: approximate="none"
    "silu": _act.silu,
    "tanh": _act.tanh,
}
# What the fused pass serves: the dtypes of the CUDA kernels, on devices with values.
_FUSED_DTYPES = (dtypes.float32.np, dtypes.float64.np)
_FUSED_DEVICES = ("cpu", "cuda")


def linear_act(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "relu"
) -> Tensor:
    """activation(linear(input, weight, bias)) for activation relu, gelu (exact), silu or
    tanh, as one op with one node: the GEMM, then one pass (one kernel on CUDA) adds the
    bias and applies the activation in place, keeping one array for the backward, whose
    own one pass gives g * act'(x @ W.T + b) for the GEMMs. On CPU the values and
    gradients are bitwise those of the two ops. Elsewhere (16-bit dtypes, autocast, which
    runs linear in 16 bits, the meta device) it is those two ops."""
    unfused = ACTIVATIONS.get(activation)
    if unfused is None:
        raise ValueError(
            f"linear_act: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )
    if _ac.on:
        return unfused(linear(input, weight, bias))
    xd, wd = _checked(input, weight, bias)
    dev = input._device
    if xd.dtype not in _FUSED_DTYPES or dev.type not in _FUSED_DEVICES:
        return unfused(linear(input, weight, bias))
    ops = dev.ops
    grad = _gm.enabled and (input._rg or weight._rg or (bias is not None and bias._rg))
    y = gemm(ops.xp, xd.reshape(-1, wd.shape[1]), wd.T)
    y, aux = ops.bias_act(y, None if bias is None else bias._data, activation, grad)
    shape = (*xd.shape[:-1], wd.shape[0])
    out = wrap(y.reshape(shape), dev)
    if grad:
        node = LinearActBackward()
        node.saved = (xd, wd, aux.reshape(shape))
        node.xp, node.ops, node.act, node.acc = ops.xp, ops, activation, None
        if aux is y:  # the output itself: an in-place change to it must fail the backward
            save_versions(node, input, weight, out)
        else:
            save_versions(node, input, weight)
        _record(node, out, input, weight, bias)
    return out
