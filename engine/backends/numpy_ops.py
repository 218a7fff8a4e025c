"""The generic backend, written against `self.xp`; NumPy's own spelling where it differs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.dtypes import float32 as _FLOAT32

_NO_CONTEXT = contextlib.nullcontext()  # reusable: it holds no state


class ArrayOps:
    name = "numpy"

    def __init__(self) -> None:
        self.xp: Any = np

    def on(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which new arrays are made on this backend's device."""
        return _NO_CONTEXT

    def to_host(self, a: Any) -> np.ndarray:
        """A NumPy copy of `a`."""
        return np.array(a, copy=True)

    def from_host(self, a: np.ndarray) -> Any:
        """`a` as an array of this backend (no copy where none is needed)."""
        return a

    def index_add(self, target: Any, index: Any, values: Any) -> None:
        """target[index] += values, adding every occurrence of a repeated index."""
        np.add.at(target, index, values)

    def reshape_view(self, a: Any, shape: tuple[int, ...]) -> Any:
        """`a` reshaped without copying; ValueError where the strides do not allow it."""
        return np.reshape(a, shape, copy=False)

    def synchronize(self) -> None:
        """Wait for queued device work; the host runs NumPy eagerly."""

    def erfc(self, a: Any) -> Any:
        """The complementary error function elementwise, in a's dtype (NumPy has none).

        W. J. Cody's rational approximations (Math. Comp. 1969, as in his CALERF), worked
        in float64: within 1e-15 relative of the true value, tails included.
        """
        a = np.asarray(a)
        return _erfc64(a.astype(np.float64, copy=False)).astype(a.dtype, copy=False)

    def normal_cdf(self, a: Any) -> Any:
        """Phi(a), the standard normal CDF (GELU's gate), in a's dtype.

        float64 through erfc. Narrower floats by linear interpolation in a float32 table
        of Phi with step 2**-10 on [-10, 10] (interpolation error 3e-8, within 1e-7 after
        float32 rounding),
        a handful of passes on cache-sized blocks where a rational erfc would take ~25
        (measured: 9 ms for 2M values against 42 ms).
        """
        a = np.asarray(a)
        if a.dtype == np.float64:
            return 0.5 * _erfc64(a * -_SQRT_HALF)
        x = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
        out = np.empty_like(x)
        for i in range(0, x.size, _BLOCK):  # blocks keep the passes in cache
            _normal_cdf32(x[i : i + _BLOCK], out[i : i + _BLOCK])
        return out.reshape(a.shape).astype(a.dtype, copy=False)

    # ---- fused ops: the generic maths here, one CUDA kernel each in CupyOps ------------------
    def adam_update(
        self,
        params: list[Any],
        grads: list[Any],
        exp_avg: Any,
        exp_avg_sq: Any,
        max_exp_avg_sq: Any,
        c: Any,
        step: float,
        scratch: Callable[[Any], Any],
    ) -> None:
        """One Adam/AdamW step of a parameter group, in place: `params` and `grads` are
        the arrays of each parameter and its gradient, the moments flat buffers over the
        whole group (max_exp_avg_sq None without AMSGrad), `c` the group's options
        (engine.optim.adam's _Consts) and `step` the step just reached; `scratch(like)`
        lends a reusable array shaped like `like`."""
        xp = self.xp
        g = xp.concatenate([gr.reshape(-1) for gr in grads])
        if c.maximize:
            xp.negative(g, out=g)
        if c.weight_decay != 0:
            if c.decoupled:
                for p in params:
                    xp.multiply(p, 1 - c.lr * c.weight_decay, out=p)
            else:
                decay = xp.concatenate([p.reshape(-1) for p in params])
                xp.multiply(decay, c.weight_decay, out=decay)
                xp.add(decay, g, out=g)  # g is already negated when maximizing
        update = adam_moments(xp, c, step, g, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch(g), g)
        start = 0
        for p in params:
            n = p.size
            xp.add(p, update[start : start + n].reshape(p.shape), out=p)
            start += n

    def cross_entropy_rows(self, rows: Any, safe: Any, keep: Any) -> tuple[Any, Any, Any]:
        """Cross-entropy of (M, C) logits against class indices `safe` (M,), unweighted
        and unsmoothed: the per-row terms -log_softmax(rows)[safe] (times 0 where `keep`
        is False), `keep` as float weights, and what cross_entropy_rows_backward needs."""
        logp = log_softmax_rows(rows, self.xp)
        wt = keep.astype(logp.dtype)
        picked = self.xp.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
        return -picked * wt, wt, logp

    def cross_entropy_rows_backward(
        self, saved: Any, safe: Any, wt: Any, keep: Any, grow: Any
    ) -> Any:
        """d loss / d rows for cross_entropy_rows: (softmax - onehot) * grow * wt per row
        (grow: each row's upstream gradient), exactly 0 in rows not kept."""
        xp = self.xp
        p = xp.exp(saved)
        # Ignored rows get exactly 0, even when an all-ignored mean made grow inf.
        grow = xp.where(keep, grow, 0)
        gx = p * (grow * wt)[:, None]
        gx[xp.arange(p.shape[0]), safe] -= grow * wt
        return gx

    def layer_norm_rows(self, x: Any, w: Any, b: Any, eps: float) -> tuple[Any, Any, Any]:
        """layer_norm of (M, N) rows: (y, xhat, rstd), with w and b (N,) or None."""
        xp = self.xp
        mean = x.mean(axis=1, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=1, keepdims=True)
        rstd = 1 / xp.sqrt(var + eps)
        xhat = xc * rstd
        return affine(xhat, w, b), xhat, rstd

    def layer_norm_rows_backward(
        self,
        g: Any,
        xhat: Any,
        rstd: Any,
        w: Any,
        want_x: bool,
        want_w: bool,
        want_b: bool,
    ) -> tuple[Any, Any, Any]:
        """(dx, dw, db) of layer_norm_rows for the (M, N) gradient g, each None unless wanted."""
        gx = gw = gb = None
        if want_x:
            gh = g * w if w is not None else g
            n = xhat.shape[1]
            # (gh - mean(gh) - xhat * mean(gh * xhat)) * rstd, with the means as sums / n
            s1 = gh.sum(axis=1, keepdims=True)
            s2 = (gh * xhat).sum(axis=1, keepdims=True)
            gx = ((gh - s1 / n) - xhat * (s2 / n)) * rstd
        if want_w:
            gw = (g * xhat).sum(axis=0)
        if want_b:
            gb = g.sum(axis=0)
        return gx, gw, gb

    def gelu(self, x: Any) -> tuple[Any, Any]:
        """Exact GELU x * Phi(x) of a float32/float64 array, and Phi(x) for the backward."""
        cdf = self.normal_cdf(x)
        return x * cdf, cdf

    def gelu_backward(self, g: Any, x: Any, cdf: Any) -> Any:
        """g * (Phi(x) + x * pdf(x)), in place in one buffer: no temporaries."""
        gx = _gelu_slope(self.xp, x, cdf)
        gx *= g
        return gx

    def silu(self, x: Any) -> tuple[Any, Any]:
        """SiLU x * sigmoid(x) of a float32/float64 array, and sigmoid(x) for the backward."""
        s = _sigmoid(self.xp, x)
        return x * s, s

    def silu_backward(self, g: Any, x: Any, s: Any) -> Any:
        """g * s * (1 + x * (1 - s)), s = sigmoid(x)."""
        return g * _silu_slope(x, s)

    def bias_act(self, y: Any, b: Any, act: str, keep: bool) -> tuple[Any, Any]:
        """act(y + b) for `y` a fresh (M, N) float32/float64 GEMM output (overwritten), b
        (N,) or None, act relu, gelu (exact), silu or tanh: (the result, what
        bias_act_backward reads when `keep`, else None). That is the output itself for
        relu and tanh, act'(y + b) for gelu and silu (one array kept, not the input and
        the gate). Op for op what linear then the activation's own op compute, so the
        values are bitwise theirs."""
        xp = self.xp
        if b is not None:
            y += b
        if act == "relu":
            xp.maximum(y, 0, out=y)
            return y, (y if keep else None)
        if act == "tanh":
            xp.tanh(y, out=y)
            return y, (y if keep else None)
        gate = self.normal_cdf(y) if act == "gelu" else _sigmoid(xp, y)
        slope = None
        if keep:  # before y becomes the output: the slope reads the input
            slope = _gelu_slope(xp, y, gate) if act == "gelu" else _silu_slope(y, gate)
        y *= gate
        return y, slope

    def bias_act_backward(self, g: Any, aux: Any, act: str) -> Any:
        """g * act'(input) from bias_act's `aux`, in the shape of both; the same ops (and
        result layout) as each activation's own backward."""
        if act == "relu":
            return g * (aux > 0)
        if act == "tanh":
            return g * (1 - aux * aux)
        if act == "silu":
            return g * aux
        # GELU's own backward multiplies into its slope buffer: a fresh C-ordered array
        return self.xp.multiply(g, aux, out=self.xp.empty_like(aux))

    def dropout_mask(self, shape: tuple[int, ...], dtype: Any, p: float, generator: Any) -> Any:
        """A dropout mask in `dtype`: 1 / (1 - p) where a float32 uniform u >= p, else 0,
        drawn from the engine Generator `generator` (0 < p < 1)."""
        u = generator.uniform(shape, _FLOAT32)
        keep = u >= np.float32(p)
        return self.from_host(keep.astype(dtype) * dtype.type(1 / (1 - p)))

    def dropout(self, x: Any, p: float, generator: Any) -> tuple[Any, Any]:
        """(x * mask, mask) with mask = dropout_mask(x.shape, x.dtype, p, generator)."""
        mask = self.dropout_mask(x.shape, x.dtype, p, generator)
        return x * mask, mask

    def random(
        self, generator: Any, kind: str, shape: tuple[int, ...], d: Any, a: float, b: float
    ) -> Any:
        """An array of draws from the engine Generator: kind "uniform" on [a, b) or
        "normal" with mean a and std b, in engine dtype d."""
        draw = generator.uniform if kind == "uniform" else generator.normal
        return self.from_host(draw(shape, d, a, b))

    def randint(
        self, generator: Any, low: int, high: int, shape: tuple[int, ...], dtype: Any
    ) -> Any:
        """Integers uniform on [low, high) from the engine Generator, as NumPy `dtype`."""
        return self.from_host(generator.integers(low, high, shape).astype(dtype, copy=False))

    def randperm(self, generator: Any, n: int, dtype: Any) -> Any:
        """A random permutation of 0..n-1 from the engine Generator, as NumPy `dtype`."""
        return self.from_host(generator.permutation(n).astype(dtype, copy=False))


def log_softmax_rows(rows: Any, xp: Any) -> Any:
    """log_softmax over the last axis of (M, C) rows."""
    z = rows - rows.max(axis=1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))


def affine(xhat: Any, w: Any, b: Any) -> Any:
    """xhat * w + b as a new array (backward keeps xhat), either factor optional."""
    if w is None:
        return xhat + b if b is not None else xhat.copy()
    y = xhat * w
    if b is not None:
        y += b
    return y


def adam_moments(
    xp: Any,
    c: Any,
    step: float,
    g: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    max_sq: Any,
    t: Any,
    out: Any,
) -> Any:
    """Update Adam's moments in place and return `-lr/bc1 * exp_avg / denom` in `out`, op
    for op as PyTorch's single-tensor Adam (t is scratch; out may be g's own buffer)."""
    xp.subtract(g, exp_avg, out=t)
    if c.small:
        xp.multiply(t, c.w, out=t)
        xp.add(exp_avg, t, out=exp_avg)
    else:
        xp.multiply(t, c.one_minus_w, out=t)
        xp.subtract(g, t, out=exp_avg)
    xp.multiply(exp_avg_sq, c.beta2, out=exp_avg_sq)
    xp.multiply(g, 1 - c.beta2, out=t)
    xp.multiply(t, g, out=t)
    xp.add(exp_avg_sq, t, out=exp_avg_sq)
    bias_correction1 = 1 - c.beta1**step
    bias_correction2_sqrt = (1 - c.beta2**step) ** 0.5
    step_size = c.lr / bias_correction1
    if max_sq is not None:
        xp.maximum(max_sq, exp_avg_sq, out=max_sq)
        source = max_sq
    else:
        source = exp_avg_sq
    denom = t
    xp.sqrt(source, out=denom)
    xp.divide(denom, bias_correction2_sqrt, out=denom)
    xp.add(denom, c.eps, out=denom)
    # g is dead here, so `out` may hold the update even when g lives in it.
    xp.multiply(exp_avg, -step_size, out=out)
    xp.divide(out, denom, out=out)
    return out


_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


def _gelu_slope(xp: Any, x: Any, cdf: Any) -> Any:
    """GELU's derivative Phi(x) + x * pdf(x) as a new array, in place in it."""
    d = xp.multiply(x, x)
    d *= -0.5
    xp.exp(d, out=d)
    d *= _INV_SQRT_2PI
    d *= x
    d += cdf
    return d


def _sigmoid(xp: Any, x: Any) -> Any:
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: s is then 0
        return 1 / (1 + xp.exp(-x))


def _silu_slope(x: Any, s: Any) -> Any:
    """SiLU's derivative s * (1 + x * (1 - s)), s = sigmoid(x)."""
    return s * (1 + x * (1 - s))


_BLOCK = 1 << 15


def _normal_cdf32(x: np.ndarray, out: np.ndarray) -> None:
    s = x * _PHI_SCALE  # exact (a power of two), so floor and fraction below are exact too
    np.clip(s, -_PHI_HALF, _PHI_TOP, out=s)
    whole = np.floor(s)
    s -= whole
    i = whole.astype(np.intp)
    i += _PHI_OFFSET
    # mode="wrap": the clip above keeps i in range, and the default mode="raise" buffers out
    np.take(_PHI_SLOPE, i, out=out, mode="wrap")
    out *= s
    out += np.take(_PHI, i, mode="wrap")


def _erfc64(x: np.ndarray) -> np.ndarray:
    y = np.abs(x)
    out = np.empty_like(x)
    small = y <= 0.46875
    if small.any():
        xs = x[small]
        z = xs * xs
        num, den = _ERF_A[4] * z, z
        for i in range(3):
            num = (num + _ERF_A[i]) * z
            den = (den + _ERF_B[i]) * z
        out[small] = 1.0 - xs * (num + _ERF_A[3]) / (den + _ERF_B[3])
    big = ~small
    if big.any():
        yb = np.minimum(y[big], 27.0)  # erfc underflows to 0 well before 27
        mid = yb <= 4.0
        r = np.empty_like(yb)
        ym = yb[mid]
        num, den = _ERF_C[8] * ym, ym
        for i in range(7):
            num = (num + _ERF_C[i]) * ym
            den = (den + _ERF_D[i]) * ym
        r[mid] = (num + _ERF_C[7]) / (den + _ERF_D[7])
        yt = yb[~mid]
        z = 1.0 / (yt * yt)
        num, den = _ERF_P[5] * z, z
        for i in range(4):
            num = (num + _ERF_P[i]) * z
            den = (den + _ERF_Q[i]) * z
        r[~mid] = (_INV_SQRT_PI - z * (num + _ERF_P[4]) / (den + _ERF_Q[4])) / yt
        # exp(-y*y) split as exp(-t*t) * exp(-(y-t)(y+t)) with t = y rounded to 1/16,
        # Cody's guard against the rounding error of squaring y.
        t = np.trunc(yb * 16.0) / 16.0
        erfc = np.exp(-t * t) * np.exp(-(yb - t) * (yb + t)) * r
        out[big] = np.where(x[big] < 0, 2.0 - erfc, erfc)
    return out


_SQRT_HALF = 0.7071067811865476
_PHI_SCALE = np.float32(1024.0)  # table points per unit: the step is 2**-10
_PHI_OFFSET = 10 * 1024  # table index of x = 0; the table spans [-10, 10]
_PHI_HALF = np.float32(_PHI_OFFSET)
_PHI_TOP = np.nextafter(_PHI_HALF, np.float32(0))  # keeps the last slope's index in range


# Cody's coefficients: erf on |x| <= 0.46875 (A/B), erfc on (0.46875, 4] (C/D) and beyond (P/Q).
_ERF_A = (
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
)
_ERF_B = (
    2.36012909523441209e01,
    2.44024637934444173e02,
    1.28261652607737228e03,
    2.84423683343917062e03,
)
_ERF_C = (
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
)
_ERF_D = (
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
)
_ERF_P = (
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
)
_ERF_Q = (
    2.56852019228982242e00,
    1.87295284992346725e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_INV_SQRT_PI = 5.6418958354775628695e-1


def _phi_table() -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(-10.0, 10.0, 20 * 1024 + 1)
    phi = 0.5 * _erfc64(grid * -_SQRT_HALF)
    return phi.astype(np.float32), np.diff(phi).astype(np.float32)


_PHI, _PHI_SLOPE = _phi_table()
