"""`dropout`: one node keeping the scaled mask.

Masks come from the engine's own stream (engine.random.default_generator unless a
generator is given): a float32 uniform draw u per element, kept where u >= p and scaled
by 1/(1-p), so the same seed gives the same mask on every run; for a CUDA tensor the
mask is drawn on the device from the generator's counter-based stream (one fused kernel).
"""

from __future__ import annotations

from typing import Any

from engine.autograd import Node
from engine.autograd import grad_mode as _gm
from engine.functions.common import Tensor, record, wrap
from engine.nn.functional._layer_common import floating, maybe_inplace
from engine.random import Generator, generator_or_default


class DropoutBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (mask,) = self.saved  # type: ignore[misc]
        return (gy * mask,)


def dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: Generator | None = None,
) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0 or input.numel() == 0:
        return input
    floating("dropout", input)
    xd = input._data
    dev = input._device
    if p == 1.0:
        mask = dev.xp.zeros(xd.shape, dtype=xd.dtype)
        y = xd * mask
    else:
        y, mask = dev.ops.dropout(xd, p, generator_or_default(generator))
    out = wrap(y, dev)
    if input._rg and _gm.enabled:
        node = DropoutBackward()
        node.saved = (mask,)
        record(node, out, input)
    return maybe_inplace(input, out, inplace)
