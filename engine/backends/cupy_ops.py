"""CuPy's overrides of the generic backend; same signatures (tests/test_backends.py checks)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.backends import cuda_kernels as ck
from engine.backends.numpy_ops import ArrayOps

# An absent optional array: CuPy turns a None kernel argument into the address 0xffffffff,
# not NULL (cupy/cupy#9046), so the kernels' `if (ptr)` tests would pass; an 8-byte zero
# by value is a NULL pointer.
_NULL = np.uint64(0)


def _ptr(a: Any) -> Any:
    return _NULL if a is None else a


class CupyOps(ArrayOps):
    name = "cupy"

    def __init__(self, index: int = 0) -> None:
        import cupy

        self.xp = cupy
        self.index = index

    def on(self) -> contextlib.AbstractContextManager[Any]:
        return self.xp.cuda.Device(self.index)

    def to_host(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def from_host(self, a: np.ndarray) -> Any:
        with self.xp.cuda.Device(self.index):
            return self.xp.asarray(a)

    def index_add(self, target: Any, index: Any, values: Any) -> None:
        import cupyx

        cupyx.scatter_add(target, index, values)

    def reshape_view(self, a: Any, shape: tuple[int, ...]) -> Any:
        out = a.view()
        try:
            out.shape = shape
        except AttributeError as e:  # CuPy's way of saying a copy would be needed
            raise ValueError(str(e)) from None
        return out

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def erfc(self, a: Any) -> Any:
        import cupyx.scipy.special

        x = a if a.dtype in (self.xp.float32, self.xp.float64) else a.astype(self.xp.float32)
        return cupyx.scipy.special.erfc(x).astype(a.dtype, copy=False)

    def normal_cdf(self, a: Any) -> Any:
        import cupyx.scipy.special

        x = a if a.dtype in (self.xp.float32, self.xp.float64) else a.astype(self.xp.float32)
        return cupyx.scipy.special.ndtr(x).astype(a.dtype, copy=False)

    # ---- fused kernels (engine/backends/cuda_kernels.py); generic CuPy where none fits ------
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
        ctype = ck.ctype_of(exp_avg.dtype)
        if (
            ctype is None
            or any(a.dtype != exp_avg.dtype for a in (*params, *grads))
            or not all(p.flags.c_contiguous for p in params)
        ):
            super().adam_update(
                params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, c, step, scratch
            )
            return
        # No gather: the kernel reads every gradient where it lies, through a table of
        # pointers passed by value, so one launch covers up to ck.ADAM_TENSORS tensors.
        xp = self.xp
        grads = [g if g.flags.c_contiguous else xp.ascontiguousarray(g) for g in grads]
        t = exp_avg.dtype.type
        decay = 0 if c.weight_decay == 0 else (1 if c.decoupled else 2)
        factor = 1 - c.lr * c.weight_decay if decay == 1 else c.weight_decay
        # the scalars as _moments_and_update's ufuncs round them: Python floats to t
        scalars = (
            np.int32(c.maximize),
            np.int32(decay),
            t(factor),
            np.int32(c.small),
            t(c.w),
            t(c.one_minus_w),
            t(c.beta2),
            t(1 - c.beta2),
            t((1 - c.beta2**step) ** 0.5),
            t(c.eps),
            t(-(c.lr / (1 - c.beta1**step))),
        )
        fn = ck.function("adam_update", ctype, self.index)
        start = 0
        with self.on():
            for lo in range(0, len(params), ck.ADAM_TENSORS):
                ps, gs = params[lo : lo + ck.ADAM_TENSORS], grads[lo : lo + ck.ADAM_TENSORS]
                table = np.zeros(1, dtype=ck.ADAM_TABLE)
                ends = np.cumsum([p.size for p in ps])
                table["param"][0, : len(ps)] = [p.data.ptr for p in ps]
                table["grad"][0, : len(gs)] = [g.data.ptr for g in gs]
                table["end"][0, : len(ps)] = ends
                table["count"] = len(ps)
                total = int(ends[-1])
                if total:
                    moments = (exp_avg_sq, max_exp_avg_sq)
                    fn(
                        ck.grid(total),
                        (ck.BLOCK,),
                        (
                            table,
                            exp_avg[start:],
                            *(_NULL if a is None else a[start:] for a in moments),
                            np.int64(total),
                            *scalars,
                        ),
                    )
                start += total

    def cross_entropy_rows(self, rows: Any, safe: Any, keep: Any) -> tuple[Any, Any, Any]:
        ctype = ck.ctype_of(rows.dtype)
        if ctype is None:
            return super().cross_entropy_rows(rows, safe, keep)
        xp = self.xp
        rows = xp.ascontiguousarray(rows)
        m, c = rows.shape
        safe = xp.ascontiguousarray(safe.astype(xp.int64, copy=False))
        keep = xp.ascontiguousarray(keep)
        lse = xp.empty(m, dtype=rows.dtype)
        terms = xp.empty(m, dtype=rows.dtype)
        if m:
            with self.on():
                ck.function("cross_entropy_forward", ctype, self.index)(
                    (m,), (ck.BLOCK,), (rows, safe, keep, np.int64(c), lse, terms)
                )
        return terms, keep.astype(rows.dtype), (rows, lse)

    def cross_entropy_rows_backward(
        self, saved: Any, safe: Any, wt: Any, keep: Any, grow: Any
    ) -> Any:
        if not isinstance(saved, tuple):  # the forward took the generic path
            return super().cross_entropy_rows_backward(saved, safe, wt, keep, grow)
        rows, lse = saved
        xp = self.xp
        grow = grow.astype(rows.dtype, copy=False)
        stride = grow.strides[0] // grow.itemsize  # 0 where a mean's gradient is broadcast
        if stride not in (0, 1):
            grow, stride = xp.ascontiguousarray(grow), 1
        safe = xp.ascontiguousarray(safe.astype(xp.int64, copy=False))
        gx = xp.empty_like(rows)
        m, c = rows.shape
        with self.on():
            ck.function("cross_entropy_backward", ck.ctype_of(rows.dtype), self.index)(
                ck.grid(m * c),
                (ck.BLOCK,),
                (
                    rows,
                    lse,
                    safe,
                    xp.ascontiguousarray(keep),
                    grow,
                    np.int64(stride),
                    np.int64(m * c),
                    np.int64(c),
                    gx,
                ),
            )
        return gx

    def layer_norm_rows(self, x: Any, w: Any, b: Any, eps: float) -> tuple[Any, Any, Any]:
        ctype = ck.ctype_of(x.dtype)
        if ctype is None:
            return super().layer_norm_rows(x, w, b, eps)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        m, n = x.shape
        y, xhat = xp.empty_like(x), xp.empty_like(x)
        rstd = xp.empty((m, 1), dtype=x.dtype)
        if m:
            w, b = (None if a is None else xp.ascontiguousarray(a) for a in (w, b))
            with self.on():
                ck.function("layer_norm_forward", ctype, self.index)(
                    (m,),
                    (ck.BLOCK,),
                    (x, _ptr(w), _ptr(b), np.int64(n), x.dtype.type(eps), y, xhat, rstd),
                )
        return y, xhat, rstd

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
        ctype = ck.ctype_of(xhat.dtype)
        if ctype is None or g.dtype != xhat.dtype:
            return super().layer_norm_rows_backward(g, xhat, rstd, w, want_x, want_w, want_b)
        xp = self.xp
        g = xp.ascontiguousarray(g)
        m, n = g.shape
        gx = gw = gb = None
        with self.on():
            if want_x:
                gx = xp.empty_like(g)
                if m:
                    wc = None if w is None else xp.ascontiguousarray(w)
                    ck.function("layer_norm_backward", ctype, self.index)(
                        (m,), (ck.BLOCK,), (g, xhat, rstd, _ptr(wc), np.int64(n), gx)
                    )
            if want_w or want_b:
                # a few row groups per column block, each summed into its own row of the
                # partials, then one small sum over them: no atomics, the same every run
                groups = max(1, min(64, m // 64))
                dw = xp.empty((groups, n), dtype=g.dtype)
                db = xp.empty((groups, n), dtype=g.dtype)
                if m and n:
                    ck.function("layer_norm_weight_grad", ctype, self.index)(
                        ((n + 31) // 32, groups),
                        (ck.BLOCK,),
                        (g, xhat, np.int64(m), np.int64(n), dw, db),
                    )
                else:
                    dw.fill(0)
                    db.fill(0)
                gw = dw.sum(axis=0) if want_w else None
                gb = db.sum(axis=0) if want_b else None
        return gx, gw, gb

    def gelu(self, x: Any) -> tuple[Any, Any]:
        out = _pointwise(self, "gelu_forward", x)
        return super().gelu(x) if out is None else out

    def gelu_backward(self, g: Any, x: Any, cdf: Any) -> Any:
        gx = _pointwise_backward(self, "gelu_backward", g, x, cdf)
        return super().gelu_backward(g, x, cdf) if gx is None else gx

    def silu(self, x: Any) -> tuple[Any, Any]:
        out = _pointwise(self, "silu_forward", x)
        return super().silu(x) if out is None else out

    def silu_backward(self, g: Any, x: Any, s: Any) -> Any:
        gx = _pointwise_backward(self, "silu_backward", g, x, s)
        return super().silu_backward(g, x, s) if gx is None else gx

    def bias_act(self, y: Any, b: Any, act: str, keep: bool) -> tuple[Any, Any]:
        ctype = ck.ctype_of(y.dtype)
        if ctype is None or (b is not None and b.dtype != y.dtype):
            return super().bias_act(y, b, act, keep)
        xp = self.xp
        y = xp.ascontiguousarray(y)  # a no-op on a GEMM's output
        slope = xp.empty_like(y) if keep and act in ("gelu", "silu") else None
        if y.size:
            b = None if b is None else xp.ascontiguousarray(b)
            with self.on():
                ck.function("bias_act_forward", ctype, self.index)(
                    ck.grid(y.size),
                    (ck.BLOCK,),
                    (
                        y,
                        _ptr(b),
                        np.int64(y.size),
                        np.int64(y.shape[-1]),
                        np.int32(ck.ACTIVATIONS[act]),
                        _ptr(slope),
                    ),
                )
        if not keep:
            return y, None
        return y, (y if slope is None else slope)

    def bias_act_backward(self, g: Any, aux: Any, act: str) -> Any:
        ctype = ck.ctype_of(aux.dtype)
        if ctype is None or g.dtype != aux.dtype or g.shape != aux.shape:
            return super().bias_act_backward(g, aux, act)
        xp = self.xp
        g, aux = xp.ascontiguousarray(g), xp.ascontiguousarray(aux)
        gx = xp.empty_like(aux)
        if gx.size:
            with self.on():
                ck.function("bias_act_backward", ctype, self.index)(
                    ck.grid(gx.size),
                    (ck.BLOCK,),
                    (g, aux, np.int64(gx.size), np.int32(ck.ACTIVATIONS[act]), gx),
                )
        return gx

    def dropout_mask(self, shape: tuple[int, ...], dtype: Any, p: float, generator: Any) -> Any:
        return _dropout(self, None, shape, dtype, p, generator)[1]

    def dropout(self, x: Any, p: float, generator: Any) -> tuple[Any, Any]:
        return _dropout(self, x, x.shape, x.dtype, p, generator)

    def random(
        self, generator: Any, kind: str, shape: tuple[int, ...], d: Any, a: float, b: float
    ) -> Any:
        from engine.random import _LOW_BITS

        wide = np.float64 if d.np == np.float64 else np.float32
        seed, offset = generator.device_draw()
        with self.on():  # allocated on this device, not the current one
            out = self.xp.empty(shape, dtype=wide)
            if out.size:
                span = b - a if kind == "uniform" else b
                ck.function("random", ck.ctype_of(wide), self.index)(
                    ck.grid(out.size),
                    (ck.BLOCK,),
                    (
                        np.int64(out.size),
                        np.uint64(seed),
                        np.uint64(offset),
                        np.int32(kind != "uniform"),
                        np.int32(_LOW_BITS.get(d.name, 0) if kind == "uniform" else 0),
                        wide(a),
                        wide(span),
                        out,
                    ),
                )
            return out.astype(d.np, copy=False)

    def randint(
        self, generator: Any, low: int, high: int, shape: tuple[int, ...], dtype: Any
    ) -> Any:
        seed, offset = generator.device_draw()
        with self.on():
            out = self.xp.empty(shape, dtype=np.int64)
            if out.size:
                ck.function("randint", "float", self.index)(
                    ck.grid(out.size),
                    (ck.BLOCK,),
                    (
                        np.int64(out.size),
                        np.uint64(seed),
                        np.uint64(offset),
                        np.int64(low),
                        np.uint64(high - low),
                        out,
                    ),
                )
            return out.astype(dtype, copy=False)

    def randperm(self, generator: Any, n: int, dtype: Any) -> Any:
        # the order of n random 62-bit keys: uniform unless two keys tie (about n**2 / 2**63)
        keys = self.randint(generator, 0, 1 << 62, (n,), np.int64)
        with self.on():
            return self.xp.argsort(keys).astype(dtype, copy=False)


def _pointwise(ops: CupyOps, name: str, x: Any) -> tuple[Any, Any] | None:
    """(y, aux) of an elementwise forward kernel, or None where none serves x's dtype."""
    ctype = ck.ctype_of(x.dtype)
    if ctype is None:
        return None
    x = ops.xp.ascontiguousarray(x)
    y, aux = ops.xp.empty_like(x), ops.xp.empty_like(x)
    with ops.on():
        ck.function(name, ctype, ops.index)(
            ck.grid(x.size), (ck.BLOCK,), (x, np.int64(x.size), y, aux)
        )
    return y, aux


def _pointwise_backward(ops: CupyOps, name: str, g: Any, x: Any, aux: Any) -> Any:
    """The gradient from an elementwise backward kernel, or None where none serves."""
    ctype = ck.ctype_of(x.dtype)
    if ctype is None or g.dtype != x.dtype or g.shape != x.shape:
        return None
    xp = ops.xp
    g, x, aux = xp.ascontiguousarray(g), xp.ascontiguousarray(x), xp.ascontiguousarray(aux)
    gx = xp.empty_like(x)
    with ops.on():
        ck.function(name, ctype, ops.index)(
            ck.grid(x.size), (ck.BLOCK,), (g, x, aux, np.int64(x.size), gx)
        )
    return gx


def _dropout(
    ops: CupyOps, x: Any, shape: tuple[int, ...], dtype: Any, p: float, generator: Any
) -> tuple[Any, Any]:
    """(x * mask or None, mask) drawn on the device from the generator's Philox stream;
    16-bit masks are drawn in float32 and rounded."""
    xp = ops.xp
    dtype = np.dtype(dtype)
    ctype = ck.ctype_of(dtype) or "float"
    kdtype = np.float64 if ctype == "double" else np.float32
    n = math.prod(shape)
    fused = x is not None and x.dtype == kdtype
    seed, offset = generator.device_draw()
    with ops.on():  # allocated on this device, not the current one
        mask = xp.empty(shape, dtype=kdtype)
        if fused:
            x = xp.ascontiguousarray(x)
        y = xp.empty_like(mask) if fused else None
        if n:
            ck.function("dropout", ctype, ops.index)(
                ck.grid(n),
                (ck.BLOCK,),
                (
                    x if fused else _NULL,
                    np.int64(n),
                    np.uint64(seed),
                    np.uint64(offset),
                    np.float32(p),
                    # rounded to dtype first, as the CPU mask is: exact in kdtype, and
                    # the 16-bit cast below then gives the CPU's value, not a double rounding
                    kdtype(float(dtype.type(1 / (1 - p)))),
                    mask,
                    _ptr(y),
                ),
            )
        mask = mask.astype(dtype, copy=False)
        if x is not None and y is None:
            y = x * mask
    return y, mask
