"""`scaled_dot_product_attention` as one fused node: softmax(q kᵀ · scale + mask) v.

The forward keeps the attention probabilities (and the dropout mask); the backward is
four batched matmuls and the softmax derivative, so a whole attention costs one graph
node. Written against the device's array module, so it runs on NumPy and CuPy alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine import dtypes
from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.errors import ShapeError
from engine.functions.common import Tensor, check_device, record, unbroadcast, wrap
from engine.nn.functional._layer_common import gemm, wide
from engine.random import generator_or_default

_OP = "scaled_dot_product_attention"


def _safe_softmax(s: Any, xp: Any) -> Any:
    """softmax over the last dim in place; a row masked out entirely gives zeros, as
    PyTorch's SDPA does (its `_safe_softmax`), rather than nan."""
    m = s.max(axis=-1, keepdims=True)
    m[~xp.isfinite(m)] = 0
    s -= m
    xp.exp(s, out=s)
    z = s.sum(axis=-1, keepdims=True)
    z[z == 0] = 1
    s /= z
    return s


class SdpaBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        q, k, v, p, keep = self.saved  # type: ignore[misc]
        xp, scale = self.xp, self.scale
        g = wide(gy)
        pd = p if keep is None else p * keep
        gv = gemm(xp, xp.swapaxes(pd, -1, -2), g) if self.next[2] is not None else None
        gp = gemm(xp, g, xp.swapaxes(wide(v), -1, -2))
        if keep is not None:
            gp *= keep
        # softmax backward: p * (gp - sum(gp * p))
        gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))
        gmask = None
        if len(self.next) > 3 and self.next[3] is not None:
            gmask = unbroadcast(gs, self.mask_shape).astype(self.mask_dtype, copy=False)
        gs *= scale
        gq = gemm(xp, gs, wide(k)) if self.next[0] is not None else None
        gk = gemm(xp, xp.swapaxes(gs, -1, -2), wide(q)) if self.next[1] is not None else None
        dt, (sq, sk, sv) = self.dtype, self.shapes
        return (
            None if gq is None else unbroadcast(gq, sq).astype(dt, copy=False),
            None if gk is None else unbroadcast(self._ungroup(gk), sk).astype(dt, copy=False),
            None if gv is None else unbroadcast(self._ungroup(gv), sv).astype(dt, copy=False),
            gmask,
        )

    def _ungroup(self, g: Any) -> Any:
        """Sum the gradient of key/value heads repeated for grouped-query attention."""
        rep = self.groups
        if rep == 1:
            return g
        shape = g.shape
        g = g.reshape((*shape[:-3], shape[-3] // rep, rep, *shape[-2:]))
        return g.sum(axis=-3)


def _check_qkv(query: Tensor, key: Tensor, value: Tensor, enable_gqa: bool) -> int:
    """The checks PyTorch makes, with the shapes in the message; returns the head groups."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{_OP}: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ShapeError(f"{_OP}: {name} needs at least 2 dims (..., L, E), got {t.shape}")
    check_device(_OP, query, key)
    check_device(_OP, query, value)
    if not query.is_floating_point():
        raise TypeError(f"{_OP}: query must be a floating-point tensor, got {query.dtype}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            f"{_OP}: expected query, key and value to have the same dtype, got "
            f"{query.dtype}, {key.dtype} and {value.dtype}"
        )
    qs, ks, vs = query.shape, key.shape, value.shape
    if ks[-1] != qs[-1] or ks[-2] != vs[-2]:
        raise ShapeError(
            f"{_OP}: query {qs}, key {ks} and value {vs} do not fit: key's last dim must "
            "equal query's, and key and value need the same sequence length"
        )
    groups = 1
    if enable_gqa and query.ndim >= 3 and qs[-3] != ks[-3]:
        if ks[-3] != vs[-3] or qs[-3] % ks[-3]:
            raise ShapeError(
                f"{_OP}: with enable_gqa the query heads ({qs[-3]}) must be a multiple of "
                f"the key and value heads ({ks[-3]}, {vs[-3]})"
            )
        groups = qs[-3] // ks[-3]
    try:
        np.broadcast_shapes(qs[:-2], _grouped(ks, groups)[:-2], _grouped(vs, groups)[:-2])
    except ValueError:
        raise ShapeError(
            f"{_OP}: the batch dims of query {qs}, key {ks} and value {vs} do not broadcast"
        ) from None
    return groups


def _grouped(shape: tuple[int, ...], groups: int) -> tuple[int, ...]:
    if groups == 1:
        return shape
    return (*shape[:-3], shape[-3] * groups, *shape[-2:])


def _mask_scores(s: Any, attn_mask: Tensor | None, is_causal: bool, xp: Any, query: Tensor) -> Any:
    """The scores with the mask applied: False / -inf entries take no part."""
    L, S = s.shape[-2:]
    if is_causal:
        # an additive 0 / -inf mask: one broadcast add, the same on NumPy and CuPy
        allowed = xp.tril(xp.ones((L, S), dtype=bool))
        s += xp.where(allowed, 0, -math.inf).astype(s.dtype)
        return s
    if attn_mask is None:
        return s
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"{_OP}: attn_mask must be a Tensor, got {type(attn_mask).__name__}")
    check_device(_OP, query, attn_mask)
    md = attn_mask._data
    try:
        shape = np.broadcast_shapes(md.shape, s.shape)
    except ValueError:
        raise ShapeError(
            f"{_OP}: attn_mask of shape {attn_mask.shape} does not broadcast with the "
            f"attention scores of shape {s.shape}"
        ) from None
    if shape != s.shape:  # a mask with more batch dims than q, k and v: a bigger result
        s = xp.broadcast_to(s, shape).copy()
    if md.dtype == dtypes.bool_.np:
        s[...] = xp.where(md, s, -math.inf)
    elif md.dtype.kind == "f" or md.dtype == dtypes.bfloat16.np:
        s += wide(md)
    else:
        raise TypeError(f"{_OP}: attn_mask must be bool or floating point, got {attn_mask.dtype}")
    return s


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """softmax(query @ keyᵀ · scale + mask) @ value over (..., L, E) / (..., S, E) / (..., S, Ev).

    A bool attn_mask marks with True the positions that take part; a float one is added
    to the scores. `is_causal` masks out the upper triangle (top-left aligned) and may not
    be combined with attn_mask. Dropout draws from the engine's default generator.
    """
    if _ac.on:
        query, key, value, attn_mask = _autocast(_OP, query, key, value, attn_mask)
    groups = _check_qkv(query, key, value, enable_gqa)
    if is_causal and attn_mask is not None:
        raise ValueError(f"{_OP}: explicit attn_mask should not be set when is_causal=True")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{_OP}: dropout_p must be between 0 and 1, got {dropout_p}")
    xp = query._device.xp
    qd, kd, vd = query._data, key._data, value._data
    if groups > 1:
        kd, vd = xp.repeat(kd, groups, axis=-3), xp.repeat(vd, groups, axis=-3)
    sc = 1 / math.sqrt(qd.shape[-1]) if scale is None else float(scale)
    s = gemm(xp, qd, xp.swapaxes(kd, -1, -2))
    s = wide(s)
    s *= s.dtype.type(sc)
    s = _mask_scores(s, attn_mask, is_causal, xp, query)
    p = _safe_softmax(s, xp)
    keep = None
    if dropout_p > 0:
        if dropout_p == 1.0:
            keep = xp.zeros(p.shape, dtype=p.dtype)
        else:
            keep = query._device.ops.dropout_mask(
                p.shape, p.dtype, dropout_p, generator_or_default(None)
            )
    pd = p if keep is None else p * keep
    out = wrap(gemm(xp, pd, wide(vd)).astype(qd.dtype, copy=False), query._device)
    mask_grad = isinstance(attn_mask, Tensor) and attn_mask._rg and attn_mask.is_floating_point()
    if _gm.enabled and (query._rg or key._rg or value._rg or mask_grad):
        node = SdpaBackward()
        node.saved = (qd, kd, vd, p, keep)
        node.xp, node.scale, node.groups, node.dtype = xp, sc, groups, qd.dtype
        node.shapes = (qd.shape, key.shape, value.shape)
        save_versions(node, query, key, value)
        if mask_grad:
            node.mask_shape, node.mask_dtype = attn_mask.shape, attn_mask._data.dtype
            record(node, out, query, key, value, attn_mask)
        else:
            record(node, out, query, key, value)
    return out
