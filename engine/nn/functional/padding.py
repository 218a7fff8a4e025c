"""`pad`: constant padding (negative widths crop) and reflect / replicate / circular."""

from __future__ import annotations

from typing import Any

from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node
from engine.autograd import grad_mode as _gm
from engine.errors import ShapeError
from engine.functions.common import Tensor, record, wrap

_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_ATEN_PAD = {"reflect": "reflection_pad", "replicate": "replication_pad"}


class ConstantPadBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        g = gy[self.inner]
        if self.crop is None:
            return (g,)
        gx = self.xp.zeros(self.shape, dtype=gy.dtype)
        gx[self.crop] = g
        return (gx,)


class IndexPadBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (where,) = self.saved  # type: ignore[misc]
        gx = self.xp.zeros(self.size, dtype=gy.dtype)
        self.ops.index_add(gx, where.reshape(-1), gy.reshape(-1))
        return (gx.reshape(self.shape),)


def _widths(op: str, shape: tuple[int, ...], pad: Any) -> list[tuple[int, int]]:
    """PyTorch's pad tuple (last dim first, (before, after) each) as per-dim pairs."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > len(shape):
        raise ValueError(
            f"{op}: padding length must be even and at most twice the number of dims "
            f"({len(shape)}), got {len(pad)}"
        )
    widths = [(0, 0)] * len(shape)
    for i in range(len(pad) // 2):
        widths[len(shape) - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


def pad(input: Tensor, pad: Any, mode: str = "constant", value: float | None = None) -> Tensor:
    if _ac.on and mode in _ATEN_PAD:  # aten's op name, for autocast's per-op lists
        (input,) = _autocast(f"{_ATEN_PAD[mode]}{len(pad) // 2}d", input)
    xd = input._data
    xp = input._device.xp
    widths = _widths("pad", xd.shape, pad)
    if mode == "constant":
        crop = tuple(
            slice(max(-lo, 0), n - max(-hi, 0))
            for n, (lo, hi) in zip(xd.shape, widths, strict=True)
        )
        if any(s.stop - s.start < 0 for s in crop):
            raise ShapeError(f"pad: negative padding {tuple(pad)} crops more than shape {xd.shape}")
        cropped = any(lo < 0 or hi < 0 for lo, hi in widths)
        src = xd[crop] if cropped else xd
        grow = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
        fill = 0 if value is None else value
        y = xp.pad(src, grow, mode="constant", constant_values=xd.dtype.type(fill))
        out = wrap(y, input._device)
        if input._rg and _gm.enabled:
            node = ConstantPadBackward()
            node.inner = tuple(
                slice(lo, lo + n) for (lo, _), n in zip(grow, src.shape, strict=True)
            )
            node.crop = crop if cropped else None
            node.shape, node.xp = xd.shape, xp
            record(node, out, input)
        return out
    np_mode = _MODES.get(mode)
    if np_mode is None:
        raise NotImplementedError(
            f"pad: mode {mode!r} is not supported; use 'constant', 'reflect', 'replicate' "
            "or 'circular'"
        )
    if value not in (None, 0):
        raise ValueError(f"pad: padding mode {mode!r} doesn't take in value argument")
    for n, (lo, hi) in zip(xd.shape, widths, strict=True):
        if lo < 0 or hi < 0:
            raise ValueError(f"pad: mode {mode!r} takes no negative padding, got {tuple(pad)}")
        if mode == "reflect" and (lo >= n or hi >= n) and (lo or hi):
            raise ValueError(
                f"pad: padding size should be less than the corresponding input dimension, "
                f"but got padding ({lo}, {hi}) for a dim of size {n}"
            )
        if mode == "circular" and (lo > n or hi > n):
            raise ValueError(f"pad: circular padding ({lo}, {hi}) is wider than a dim of {n}")
    out = wrap(xp.pad(xd, widths, mode=np_mode), input._device)
    if input._rg and _gm.enabled:
        # Where each output element came from, padded the same way: backward adds the
        # gradient back to those places (reflected or repeated ones receive several).
        node = IndexPadBackward()
        node.saved = (xp.pad(xp.arange(xd.size).reshape(xd.shape), widths, mode=np_mode),)
        node.size, node.shape = xd.size, xd.shape
        node.xp, node.ops = xp, input._device.ops
        record(node, out, input)
    return out
