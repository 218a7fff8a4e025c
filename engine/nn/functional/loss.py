"""Losses as PyTorch's `torch.nn.functional`, each one fused node (forward and backward in one).

Every loss computes its elementwise (or per-row) terms over arrays in a wide dtype
(float32 for float16/bfloat16 inputs, as PyTorch's CPU losses accumulate), reduces them,
and records one Node whose backward spreads the upstream gradient back over the terms:
a loss in a training step then costs one graph node instead of a dozen.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from engine import dtypes
from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.backends.numpy_ops import log_softmax_rows
from engine.errors import ShapeError
from engine.functions.common import Tensor, cast, check_device, record, wrap

_LOW = frozenset((dtypes.float16.np, dtypes.bfloat16.np))
_F32 = dtypes.float32.np
_REDUCTIONS = ("none", "mean", "sum")


class LossShapeError(ShapeError, ValueError):
    """Input and target shapes a loss cannot pair: an engine ShapeError, and the
    ValueError PyTorch raises for most of these, so either `except` catches it."""


class TargetRangeError(IndexError, ValueError):
    """A class index outside [0, C): PyTorch's IndexError, also catchable as ValueError."""


# ---- shared helpers -----------------------------------------------------------------------
def _wide(a: Any) -> Any:
    return a.astype(_F32) if a.dtype in _LOW else a


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction")


def _check_tensor(op: str, name: str, t: Any) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")


def _float_input(op: str, x: Tensor) -> None:
    _check_tensor(op, "input", x)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op}: input must be a floating-point tensor, got {x.dtype}")


def _float_pair(op: str, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Input and a float target promoted to one floating dtype, on one device."""
    _float_input(op, x)
    _check_tensor(op, "target", t)
    check_device(op, x, t)
    if t.dtype == dtypes.bool_:
        raise TypeError(f"{op}: target must be a floating-point tensor, got {t.dtype}")
    if _ac.on:
        x, t = _autocast(op, x, t)
    common = dtypes.promote(x.dtype, t.dtype)
    return cast(x, common), cast(t, common)


def _same_shape(op: str, x: Tensor, t: Tensor) -> None:
    if x.shape != t.shape:
        raise LossShapeError(
            f"{op}: target of shape {tuple(t.shape)} does not match input of shape "
            f"{tuple(x.shape)}; they must have the same shape"
        )


def _broadcast_shape(op: str, x: Tensor, t: Tensor) -> tuple[int, ...]:
    """PyTorch's regression losses broadcast a differently shaped target, with a warning."""
    if x.shape == t.shape:
        return x.shape
    try:
        shape = tuple(np.broadcast_shapes(x.shape, t.shape))
    except ValueError:
        raise LossShapeError(
            f"{op}: target of shape {tuple(t.shape)} does not broadcast with input of shape "
            f"{tuple(x.shape)}"
        ) from None
    warnings.warn(
        f"{op}: using a target size ({tuple(t.shape)}) that is different to the input size "
        f"({tuple(x.shape)}); this will likely lead to incorrect results due to "
        "broadcasting. Please ensure they have the same size.",
        stacklevel=3,
    )
    return shape


def _const(op: str, name: str, w: Any, x: Tensor) -> Any:
    """An optional weight tensor as a wide array on x's device (weights get no gradient)."""
    if w is None:
        return None
    _check_tensor(op, name, w)
    check_device(op, x, w)
    return _wide(w._data.astype(x._data.dtype, copy=False))


def _reduce(terms: Any, reduction: str, xp: Any, denom: Any = None) -> Any:
    if reduction == "none":
        return terms
    total = terms.sum()
    if reduction == "sum":
        return xp.asarray(total)
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty mean is nan, as PyTorch's
        return xp.asarray(total / (terms.size if denom is None else denom))


def _upstream(gy: Any, reduction: str, denom: Any) -> Any:
    """The gradient reaching each loss term: gy itself, or gy shared by a mean."""
    gy = _wide(gy)
    if reduction != "mean":
        return gy
    with np.errstate(divide="ignore", invalid="ignore"):
        return gy / denom


# ---- elementwise losses: mse, l1, smooth_l1, huber, bce, bce_with_logits, focal -----------
class PointwiseLossBackward(Node):
    """d loss / d (input, target) for a loss that is a sum of per-element terms.

    `rule(xp, x, t, g, args)` returns both derivatives times the upstream g.
    """

    def backward(self, gy: Any) -> tuple[Any, Any]:
        x, t = self.saved  # type: ignore[misc]
        g = _upstream(gy, self.reduction, self.denom)
        gx, gt = self.rule(self.xp, _wide(x), _wide(t), g, self.args)
        # Input and target share a shape here (a broadcast target was expanded first).
        return (
            gx.astype(x.dtype, copy=False) if self.next[0] is not None else None,
            gt.astype(t.dtype, copy=False) if self.next[1] is not None else None,
        )


def _pointwise(
    op: str,
    x: Tensor,
    t: Tensor,
    reduction: str,
    terms_fn: Any,
    rule: Any,
    args: Any,
) -> Tensor:
    xp = x._device.xp
    xd, td = x._data, t._data
    terms = terms_fn(xp, _wide(xd), _wide(td), args)
    out = wrap(_reduce(terms, reduction, xp).astype(xd.dtype, copy=False), x._device)
    if _gm.enabled and (x._rg or t._rg):
        node = PointwiseLossBackward()
        node.saved = (xd, td)
        node.xp, node.rule, node.args = xp, rule, args
        node.reduction, node.denom = reduction, terms.size
        save_versions(node, x, t)
        record(node, out, x, t)
    return out


def _mse_terms(xp: Any, x: Any, t: Any, args: Any) -> Any:
    d = x - t
    return d * d


def _mse_rule(xp: Any, x: Any, t: Any, g: Any, args: Any) -> tuple[Any, Any]:
    gx = (2 * (x - t)) * g
    return gx, -gx


def _l1_terms(xp: Any, x: Any, t: Any, args: Any) -> Any:
    return xp.abs(x - t)


def _l1_rule(xp: Any, x: Any, t: Any, g: Any, args: Any) -> tuple[Any, Any]:
    gx = xp.sign(x - t) * g
    return gx, -gx


def _smooth_l1_terms(xp: Any, x: Any, t: Any, beta: float) -> Any:
    d = xp.abs(x - t)
    if beta == 0:
        return d
    return xp.where(d < beta, (0.5 / beta) * d * d, d - 0.5 * beta)


def _smooth_l1_rule(xp: Any, x: Any, t: Any, g: Any, beta: float) -> tuple[Any, Any]:
    d = x - t
    slope = xp.sign(d) if beta == 0 else xp.clip(d / beta, -1, 1)
    gx = slope * g
    return gx, -gx


def _huber_terms(xp: Any, x: Any, t: Any, delta: float) -> Any:
    d = xp.abs(x - t)
    return xp.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))


def _huber_rule(xp: Any, x: Any, t: Any, g: Any, delta: float) -> tuple[Any, Any]:
    gx = xp.clip(x - t, -delta, delta) * g
    return gx, -gx


def _regression(op: str, x: Tensor, t: Tensor, reduction: str, kind: Any, args: Any) -> Tensor:
    _check_reduction(op, reduction)
    x, t = _float_pair(op, x, t)
    shape = _broadcast_shape(op, x, t)
    if shape != x.shape or shape != t.shape:
        x, t = x.expand(*shape), t.expand(*shape)
    return _pointwise(op, x, t, reduction, kind[0], kind[1], args)


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    if weight is not None:
        return _weighted("mse_loss", mse_loss, input, target, reduction, weight)
    return _regression("mse_loss", input, target, reduction, (_mse_terms, _mse_rule), None)


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    if weight is not None:
        return _weighted("l1_loss", l1_loss, input, target, reduction, weight)
    return _regression("l1_loss", input, target, reduction, (_l1_terms, _l1_rule), None)


def _weighted(
    op: str, fn: Any, x: Tensor, t: Tensor, reduction: str, weight: Tensor, by_weight: bool = True
) -> Tensor:
    """PyTorch 2.6+'s optional elementwise weight, composed as PyTorch composes it: the
    weighted terms, then the reduction; mse and l1's mean divides by the summed weight."""
    _check_reduction(op, reduction)
    _check_tensor(op, "weight", weight)
    if weight.shape != x.shape:
        raise LossShapeError(
            f"{op}: weight of shape {tuple(weight.shape)} must have the input's shape "
            f"{tuple(x.shape)}"
        )
    terms = fn(x, t, reduction="none") * weight
    if reduction == "none":
        return terms
    if reduction == "sum":
        return terms.sum()
    return terms.sum() / weight.sum() if by_weight else terms.mean()


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    kind = (_smooth_l1_terms, _smooth_l1_rule)
    return _regression("smooth_l1_loss", input, target, reduction, kind, float(beta))


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    if weight is not None:
        return _weighted(
            "huber_loss",
            lambda x, t, reduction: huber_loss(x, t, reduction, delta),
            input,
            target,
            reduction,
            weight,
            by_weight=False,
        )
    kind = (_huber_terms, _huber_rule)
    return _regression("huber_loss", input, target, reduction, kind, float(delta))


def _bce_terms(xp: Any, x: Any, t: Any, w: Any) -> Any:
    # PyTorch clamps each log at -100 so that a probability of exactly 0 or 1 stays finite.
    with np.errstate(divide="ignore"):
        log_x = xp.maximum(xp.log(x), -100)
        log_1mx = xp.maximum(xp.log1p(-x), -100)
    terms = -(t * log_x + (1 - t) * log_1mx)
    return terms if w is None else terms * w


def _bce_rule(xp: Any, x: Any, t: Any, g: Any, w: Any) -> tuple[Any, Any]:
    gw = g if w is None else g * w
    with np.errstate(divide="ignore"):
        gx = gw * (x - t) / xp.maximum((1 - x) * x, 1e-12)
        gt = gw * (xp.log1p(-x) - xp.log(x))
    return gx, gt


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Tensor:
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    x, t = _float_pair(op, input, target)
    _same_shape(op, x, t)
    xd = x._data
    if xd.size and bool(((xd < 0) | (xd > 1)).any()):
        raise ValueError(f"{op}: all elements of input should be between 0 and 1")
    w = _const(op, "weight", weight, x)
    if w is not None:
        w = _broadcast_const(op, "weight", w, x.shape)
    return _pointwise(op, x, t, reduction, _bce_terms, _bce_rule, w)


def _broadcast_const(op: str, name: str, w: Any, shape: tuple[int, ...]) -> Any:
    try:
        np.broadcast_shapes(w.shape, shape)
    except ValueError:
        raise LossShapeError(
            f"{op}: {name} of shape {tuple(w.shape)} does not broadcast with input of shape "
            f"{tuple(shape)}"
        ) from None
    return w


def _softplus_neg(xp: Any, x: Any) -> Any:
    """-log(sigmoid(x)) = log(1 + exp(-x)), without overflow for either sign of x."""
    return xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def _sigmoid(xp: Any, x: Any) -> Any:
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _bcel_terms(xp: Any, x: Any, t: Any, args: Any) -> Any:
    w, pw = args
    sp = _softplus_neg(xp, x)
    terms = (1 - t) * x + (sp if pw is None else (1 + (pw - 1) * t) * sp)
    return terms if w is None else terms * w


def _bcel_rule(xp: Any, x: Any, t: Any, g: Any, args: Any) -> tuple[Any, Any]:
    w, pw = args
    gw = g if w is None else g * w
    s = _sigmoid(xp, x)
    if pw is None:
        return (s - t) * gw, -x * gw
    gx = (s * (1 + (pw - 1) * t) - pw * t) * gw
    # d/dt: -x - (pw - 1) * log(sigmoid(x)), with log(sigmoid(x)) = -softplus(-x)
    gt = (-x + (pw - 1) * _softplus_neg(xp, x)) * gw
    return gx, gt


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    x, t = _float_pair(op, input, target)
    _same_shape(op, x, t)
    w = _const(op, "weight", weight, x)
    pw = _const(op, "pos_weight", pos_weight, x)
    if w is not None:
        _broadcast_const(op, "weight", w, x.shape)
    if pw is not None:
        _broadcast_const(op, "pos_weight", pw, x.shape)
    return _pointwise(op, x, t, reduction, _bcel_terms, _bcel_rule, (w, pw))


def _focal_parts(xp: Any, x: Any, t: Any, gamma: float) -> tuple[Any, Any, Any, Any]:
    p = _sigmoid(xp, x)
    ce = (1 - t) * x + _softplus_neg(xp, x)
    m = 1 - (p * t + (1 - p) * (1 - t))  # 1 - p_t
    return p, ce, m, m**gamma if gamma != 2 else m * m


def _alpha_t(t: Any, alpha: float) -> Any:
    return alpha * t + (1 - alpha) * (1 - t)


def _focal_terms(xp: Any, x: Any, t: Any, args: Any) -> Any:
    gamma, alpha = args
    _, ce, _, mg = _focal_parts(xp, x, t, gamma)
    terms = ce * mg
    return terms if alpha < 0 else terms * _alpha_t(t, alpha)


def _focal_rule(xp: Any, x: Any, t: Any, g: Any, args: Any) -> tuple[Any, Any]:
    gamma, alpha = args
    p, ce, m, mg = _focal_parts(xp, x, t, gamma)
    # d(m**gamma)/dm; 0 for gamma 0, as PyTorch's pow backward gives for a zero exponent
    dmg = 0 if gamma == 0 else gamma * (m if gamma == 2 else m ** (gamma - 1))
    dp = p * (1 - p)
    gx = (p - t) * mg + ce * dmg * (1 - 2 * t) * dp
    gt = -x * mg + ce * dmg * (1 - 2 * p)
    if alpha >= 0:
        at = _alpha_t(t, alpha)
        gt = gt * at + (2 * alpha - 1) * ce * mg
        gx = gx * at
    return gx * g, gt * g


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """torchvision.ops.sigmoid_focal_loss (Lin et al., 2017) on logits, as one fused node:
    BCE-with-logits times (1 - p_t)**gamma, times alpha_t unless alpha < 0."""
    op = "sigmoid_focal_loss"
    _check_reduction(op, reduction)
    x, t = _float_pair(op, inputs, targets)
    _same_shape(op, x, t)
    return _pointwise(op, x, t, reduction, _focal_terms, _focal_rule, (float(gamma), float(alpha)))


# ---- class-index losses: cross_entropy and nll_loss ---------------------------------------
def _rows(a: Any, xp: Any) -> Any:
    """(N, C, d1, ...) or (C,) as (M, C) rows, the class dim last."""
    if a.ndim == 1:
        return a.reshape(1, -1)
    if a.ndim > 2:
        a = xp.moveaxis(a, 1, -1)
    return a.reshape(-1, a.shape[-1])


def _unrows(g: Any, shape: tuple[int, ...], xp: Any) -> Any:
    """The inverse of `_rows` for a gradient: back to the input's (N, C, d1, ...) layout."""
    if len(shape) <= 2:
        return g.reshape(shape)
    lead = (shape[0], *shape[2:], shape[1])
    return xp.moveaxis(g.reshape(lead), -1, 1)


def _index_target(op: str, x: Tensor, t: Tensor, ignore_index: int) -> tuple[Any, Any]:
    """Flat class indices with ignored entries sent to class 0, and the mask of kept ones."""
    shape = tuple(x.shape)
    want = () if len(shape) == 1 else (shape[0], *shape[2:])
    if tuple(t.shape) != want:
        raise LossShapeError(
            f"{op}: expected target of shape {want} for input of shape {shape}, got "
            f"target of shape {tuple(t.shape)}"
        )
    xp = x._device.xp
    td = t._data.reshape(-1)
    keep = td != ignore_index
    c = shape[0] if len(shape) == 1 else shape[1]
    # On CUDA this check would wait for the GPU; there the fused cross-entropy gives NaN
    # for such a target instead (other class-index losses do not check on CUDA).
    bad = keep & ((td < 0) | (td >= c))
    if x._device.type == "cpu" and td.size and bool(bad.any()):
        first = int(td[bad][0])
        raise TargetRangeError(
            f"{op}: target {first} is out of bounds for input of shape {shape} with {c} classes"
        )
    return xp.where(keep, td, 0), keep


def _class_weight(op: str, weight: Any, x: Tensor) -> Any:
    w = _const(op, "weight", weight, x)
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    if w is not None and w.shape != (c,):
        raise LossShapeError(
            f"{op}: weight of shape {tuple(w.shape)} should have one entry per class: "
            f"({c},) for input of shape {tuple(x.shape)}"
        )
    return w


def _index_input(op: str, x: Tensor, t: Tensor) -> None:
    _float_input(op, x)
    _check_tensor(op, "target", t)
    check_device(op, x, t)
    if x.ndim == 0:
        raise LossShapeError(f"{op}: input must have at least 1 dim (classes), got a 0-d tensor")


class CrossEntropyBackward(Node):
    """softmax * sum(q) - q per row, q the (weighted, smoothed) target distribution."""

    def backward(self, gy: Any) -> tuple[Any, Any]:
        logp, tgt = self.saved  # type: ignore[misc]
        xp, eps, w = self.xp, self.eps, self.weight
        m, c = self.rows
        g = _upstream(gy, self.reduction, self.denom)
        grow = g.reshape(-1) if self.reduction == "none" else xp.broadcast_to(g, (m,))
        gt = None
        if self.probs:
            p = xp.exp(logp)
            q = _wide(_rows(tgt, xp))
            if eps:
                q = q * (1 - eps) + eps / c
            qw = q if w is None else q * w
            gx = (p * qw.sum(axis=1, keepdims=True) - qw) * grow[:, None]
            if self.next[1] is not None:
                gt = (-(1 - eps) * (logp if w is None else logp * w)) * grow[:, None]
        elif self.fused:  # logp is whatever the backend's fused forward kept
            gx = self.ops.cross_entropy_rows_backward(logp, *tgt, grow)
        else:
            safe, wt, keep = tgt
            p = xp.exp(logp)
            # Ignored rows get exactly 0, even when an all-ignored mean made grow inf.
            grow = xp.where(keep, grow, 0)
            hit = (1 - eps) * wt  # the one-hot part of q, per row
            total = hit + (eps / c) * (c if w is None else w.sum()) * keep if eps else hit
            gx = p * (grow * total)[:, None]
            gx[xp.arange(m), safe] -= grow * hit
            if eps:
                spread = (grow * keep * (eps / c))[:, None]
                gx -= spread if w is None else spread * w
        gx = _unrows(gx, self.shape, xp).astype(self.dtype, copy=False)
        if gt is not None:
            gt = _unrows(gt, self.shape, xp).astype(self.dtype, copy=False)
        return gx, gt


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """log_softmax + nll_loss (or the soft-target form) as one node.

    Class-index targets: shape (N, d1, ...) for input (N, C, d1, ...), or () for (C,);
    a weighted mean divides by the summed weights of the targets not ignored.
    Class-probability targets: a float target shaped like the input; the mean divides by
    the number of rows. Label smoothing mixes in eps/C of the uniform distribution.
    """
    op = "cross_entropy"
    _check_reduction(op, reduction)
    _index_input(op, input, target)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(
            f"{op}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}"
        )
    x = input
    if _ac.on:
        (x,) = _autocast(op, x)
    xp = x._device.xp
    w = _class_weight(op, weight, x)
    probs = target.dtype.is_floating_point
    if probs:
        x, target = _float_pair(op, x, target)
        _same_shape(op, x, target)
    elif target._data.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: target must hold class indices (int64) or class probabilities (float), "
            f"got {target.dtype}"
        )
    rows = _wide(_rows(x._data, xp))
    m, c = rows.shape
    eps = float(label_smoothing)
    # class indices, unweighted and unsmoothed (the usual case): one fused backend op
    fused = not probs and w is None and not eps
    logp = None if fused else log_softmax_rows(rows, xp)
    if probs:
        q = _wide(_rows(target._data, xp))
        if eps:
            q = q * (1 - eps) + eps / c
        qw = q if w is None else q * w
        terms = -(logp * qw).sum(axis=1)
        denom: Any = m
        if reduction == "none":
            terms = terms.reshape(() if x.ndim == 1 else (x.shape[0], *x.shape[2:]))
        saved: Any = target._data
    else:
        safe, keep = _index_target(op, x, target, ignore_index)
        if fused:
            terms, wt, logp = x._device.ops.cross_entropy_rows(rows, safe, keep)
        else:
            wt = keep.astype(logp.dtype) if w is None else w[safe] * keep
            picked = xp.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
            terms = -picked * wt
            if eps:
                smooth = -(logp.sum(axis=1) if w is None else logp @ w) * keep
                terms = (1 - eps) * terms + (eps / c) * smooth
        denom = wt.sum()
        if reduction == "none":
            terms = terms.reshape(target.shape)
        saved = (safe, wt, keep)
    out = wrap(_reduce(terms, reduction, xp, denom).astype(x._data.dtype, copy=False), x._device)
    if _gm.enabled and (x._rg or (probs and target._rg)):
        node = CrossEntropyBackward()
        node.saved = (logp, saved)
        node.xp, node.eps, node.weight, node.probs = xp, eps, w, probs
        node.ops, node.fused, node.rows = x._device.ops, fused, (m, c)
        node.reduction, node.denom = reduction, denom
        node.shape, node.dtype = tuple(x.shape), x._data.dtype
        if probs:
            save_versions(node, target)
            record(node, out, x, target)
        else:
            record(node, out, x)
    return out


class NllLossBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        safe, wt, keep = self.saved  # type: ignore[misc]
        xp = self.xp
        m, c = self.rows
        g = _upstream(gy, self.reduction, self.denom)
        grow = g.reshape(-1) if self.reduction == "none" else xp.broadcast_to(g, (m,))
        gx = xp.zeros((m, c), dtype=grow.dtype)
        # Ignored rows get exactly 0, even when an all-ignored mean made grow inf.
        gx[xp.arange(m), safe] = xp.where(keep, -grow * wt, 0)
        return (_unrows(gx, self.shape, xp).astype(self.dtype, copy=False),)


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> Tensor:
    """-input[target] per row (input holds log-probabilities), times the class weight."""
    op = "nll_loss"
    _check_reduction(op, reduction)
    _index_input(op, input, target)
    if target._data.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (int64), got {target.dtype}")
    x = input
    if _ac.on:
        (x,) = _autocast(op, x)
    xp = x._device.xp
    w = _class_weight(op, weight, x)
    safe, keep = _index_target(op, x, target, ignore_index)
    rows = _wide(_rows(x._data, xp))
    wt = keep.astype(rows.dtype) if w is None else w[safe] * keep
    terms = -xp.take_along_axis(rows, safe[:, None], axis=1)[:, 0] * wt
    if reduction == "none":
        terms = terms.reshape(target.shape)
    denom = wt.sum()
    out = wrap(_reduce(terms, reduction, xp, denom).astype(x._data.dtype, copy=False), x._device)
    if _gm.enabled and x._rg:
        node = NllLossBackward()
        node.saved = (safe, wt, keep)
        node.xp, node.rows, node.reduction, node.denom = xp, rows.shape, reduction, denom
        node.shape, node.dtype = tuple(x.shape), x._data.dtype
        record(node, out, x)
    return out
