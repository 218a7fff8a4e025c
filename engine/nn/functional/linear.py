"""`linear`: x @ W.T + b as one op with one node (one GEMM each way, batch dims flattened)."""

from __future__ import annotations

from typing import Any

from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.errors import ShapeError
from engine.functions.common import Tensor, record, wrap
from engine.nn.functional._layer_common import floating, gemm


class LinearBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        x, w = self.saved  # type: ignore[misc]
        xp, nx = self.xp, self.next
        g2 = gy.reshape(-1, w.shape[0])
        gx = gw = gb = None
        if nx[0] is not None:
            gx = gemm(xp, g2, w).reshape(x.shape)
        if nx[1] is not None:
            gw = gemm(xp, g2.T, x.reshape(-1, w.shape[1]))
        if len(nx) > 2 and nx[2] is not None:
            gb = g2.sum(axis=0, dtype=self.acc).astype(gy.dtype, copy=False)
        return gx, gw, gb


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = input @ weight.T + bias over the last dim of input, as torch.nn.functional.linear."""
    if _ac.on:
        input, weight, bias = _autocast("linear", input, weight, bias)
    floating("linear", input, weight, bias)
    xd, wd = input._data, weight._data
    if wd.ndim != 2 or xd.ndim == 0 or xd.shape[-1] != wd.shape[1]:
        raise ShapeError(
            f"linear: input of shape {xd.shape} and weight of shape {wd.shape} cannot be "
            f"multiplied (the input's last dim must equal weight.shape[1])"
        )
    n_out = wd.shape[0]
    if bias is not None and bias._data.shape != (n_out,):
        raise ShapeError(f"linear: bias of shape {bias.shape} for {n_out} output features")
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
        if bias is None:
            record(node, out, input, weight)
        else:
            record(node, out, input, weight, bias)
    return out
