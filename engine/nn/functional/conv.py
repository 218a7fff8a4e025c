"""conv2d by im2col (strided window view, one copy, one batched GEMM over groups) and
max/avg pooling over strided slices of the padded input.

Layouts: the column matrix is (groups, C/groups * kh * kw, N * Ho * Wo), built from a
(C, kh, kw, N, Ho, Wo) window view, so the copy's inner runs go along output columns and
backward's col2im adds kh * kw strided slices into a (C, N, Hp, Wp) buffer. 16-bit
inputs compute in float32 and round once.
"""

from __future__ import annotations

from typing import Any

from engine import dtypes
from engine.amp.autocast_mode import autocast_state as _ac
from engine.amp.autocast_mode import cast as _autocast
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.backends.meta import MetaArray, meta_array
from engine.errors import ShapeError
from engine.functions.common import Tensor, record, wrap
from engine.nn.functional._layer_common import floating, narrow, pair, wide


def _out_size(op: str, n: int, k: int, s: int, lo: int, hi: int, d: int) -> int:
    o = (n + lo + hi - d * (k - 1) - 1) // s + 1
    if o < 1:
        raise ShapeError(
            f"{op}: calculated output size is too small: input size {n} with padding "
            f"({lo}, {hi}), kernel {k}, dilation {d} and stride {s} leaves no output"
        )
    return o


def _batched(op: str, xd: Any) -> tuple[Any, bool]:
    if xd.ndim == 3:
        return xd[None], True
    if xd.ndim != 4:
        raise ShapeError(
            f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got {xd.shape}"
        )
    return xd, False


def _taps(kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ho: int, wo: int) -> list[Any]:
    """For each kernel tap (i, j), the (rows, cols) slices of the padded input it reads."""
    return [
        (
            slice(i * dh, i * dh + sh * (ho - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (wo - 1) + 1, sw),
        )
        for i in range(kh)
        for j in range(kw)
    ]


# ---- conv2d -------------------------------------------------------------------------------
class Conv2dBackward(Node):
    def backward(self, gy: Any) -> tuple[Any, ...]:
        cols, w2 = self.saved  # type: ignore[misc]
        xp, nx = self.xp, self.next
        n, c, h, wd, ph, pw, hp, wp = self.geom
        g, kh, kw, taps = self.groups, self.kh, self.kw, self.taps
        if self.unbatched:
            gy = gy[None]
        o, ho, wo = gy.shape[1], gy.shape[2], gy.shape[3]
        gy2 = wide(gy).transpose(1, 0, 2, 3).reshape(g, o // g, n * ho * wo)
        gx = gw = gb = None
        if nx[0] is not None:
            if self.dilation is not None:
                buf = self._col2im_shifted(xp, w2, gy)
            else:
                gcols = xp.matmul(w2.transpose(0, 2, 1), gy2).reshape(c, kh * kw, n, ho, wo)
                buf = xp.zeros((c, n, hp, wp), dtype=gcols.dtype)
                for t, (rows, cs) in enumerate(taps):
                    buf[:, :, rows, cs] += gcols[:, t]
            gx = buf[:, :, ph : ph + h, pw : pw + wd].transpose(1, 0, 2, 3)
            gx = narrow(xp.ascontiguousarray(gx), gy.dtype)
            if self.unbatched:
                gx = gx[0]
        if nx[1] is not None:
            gw = narrow(xp.matmul(gy2, cols.transpose(0, 2, 1)).reshape(self.wshape), gy.dtype)
        if len(nx) > 2 and nx[2] is not None:
            gb = narrow(gy2.sum(axis=2).reshape(-1), gy.dtype)
        return gx, gw, gb

    def _col2im_shifted(self, xp: Any, w2: Any, gy: Any) -> Any:
        """col2im for stride 1 on a flattened (Hp * Wp) grid: output columns widened to
        Wp (zero gradient in the extra ones) make every tap's contribution one contiguous
        run, shifted by i*dh*Wp + j*dw, instead of a 4-d strided slice; about 1.5x faster.
        """
        n, c, _, _, _, _, hp, wp = self.geom
        g, kh, kw = self.groups, self.kh, self.kw
        dh, dw = self.dilation
        o, ho, wo = gy.shape[1], gy.shape[2], gy.shape[3]
        ext = xp.zeros((o, n, ho, wp), dtype=self.saved[1].dtype)  # type: ignore[index]
        ext[..., :wo] = wide(gy).transpose(1, 0, 2, 3)
        run = ho * wp
        gcols = xp.matmul(w2.transpose(0, 2, 1), ext.reshape(g, o // g, n * run))
        gcols = gcols.reshape(c, kh * kw, n, run)
        flat = xp.zeros((c, n, hp * wp + (kw - 1) * dw), dtype=gcols.dtype)
        for i in range(kh):
            for j in range(kw):
                start = i * dh * wp + j * dw
                flat[:, :, start : start + run] += gcols[:, i * kw + j]
        return flat[:, :, : hp * wp].reshape(c, n, hp, wp)


def _conv_padding(op: str, padding: Any, k: tuple[int, int], d: tuple[int, int], s: Any) -> Any:
    """((top, bottom), (left, right)) from an int, a pair, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if s != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions")
            # PyTorch puts the odd extra row/column at the end
            tot = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
            return tuple((t // 2, t - t // 2) for t in tot)
        raise ValueError(f"{op}: invalid padding string {padding!r}, should be 'valid' or 'same'")
    ph, pw = pair(op, "padding", padding)
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: negative padding is not supported, got {padding!r}")
    return ((ph, ph), (pw, pw))


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    op = "conv2d"
    if _ac.on:
        input, weight, bias = _autocast(op, input, weight, bias)
    floating(op, input, weight, bias)
    x, unbatched = _batched(op, input._data)
    wdat = weight._data
    sh, sw = pair(op, "stride", stride)
    dh, dw = pair(op, "dilation", dilation)
    if min(sh, sw, dh, dw) < 1 or groups < 1:
        raise ValueError(f"{op}: stride, dilation and groups must be positive")
    if wdat.ndim != 4:
        raise ShapeError(f"{op}: weight must be 4-D (out, in/groups, kh, kw), got {wdat.shape}")
    n, c, h, wd = x.shape
    o, cg, kh, kw = wdat.shape
    if cg * groups != c or o % groups:
        raise ShapeError(
            f"{op}: input of shape {input.shape} (channels {c}) does not fit weight of shape "
            f"{wdat.shape} with groups={groups}"
        )
    if bias is not None and bias._data.shape != (o,):
        raise ShapeError(f"{op}: bias of shape {bias.shape} for {o} output channels")
    (pt, pb), (pl, pr) = _conv_padding(op, padding, (kh, kw), (dh, dw), (sh, sw))
    ho = _out_size(op, h, kh, sh, pt, pb, dh)
    wo = _out_size(op, wd, kw, sw, pl, pr, dw)
    xp = input._device.xp
    xw = wide(x)
    if pt or pb or pl or pr:
        xw = xp.pad(xw, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    hp, wp = xw.shape[2], xw.shape[3]
    s0, s1, s2, s3 = xw.strides
    win = xp.lib.stride_tricks.as_strided(
        xw,
        shape=(c, kh, kw, n, ho, wo),
        strides=(s1, s2 * dh, s3 * dw, s0, s2 * sh, s3 * sw),
    )
    cols = win.reshape(groups, cg * kh * kw, n * ho * wo)  # the im2col copy
    w2 = wide(wdat).reshape(groups, o // groups, cg * kh * kw)
    y = xp.matmul(w2, cols).reshape(o, n, ho, wo)
    if bias is not None:
        y += wide(bias._data).reshape(o, 1, 1, 1)
    y = narrow(xp.ascontiguousarray(y.transpose(1, 0, 2, 3)), x.dtype)
    out = wrap(y[0] if unbatched else y, input._device)
    if _gm.enabled and any(t is not None and t._rg for t in (input, weight, bias)):
        node = Conv2dBackward()
        node.saved = (cols, w2)
        node.xp = xp
        node.geom = (n, c, h, wd, pt, pl, hp, wp)
        node.groups, node.kh, node.kw = groups, kh, kw
        node.taps = _taps(kh, kw, sh, sw, dh, dw, ho, wo)
        node.dilation = (dh, dw) if (sh, sw) == (1, 1) else None  # None: no shifted col2im
        node.wshape = wdat.shape
        node.unbatched = unbatched
        save_versions(node, weight)
        if bias is None:
            record(node, out, input, weight)
        else:
            record(node, out, input, weight, bias)
    return out


# ---- pooling ------------------------------------------------------------------------------
def _pool_geometry(
    op: str,
    shape: tuple[int, ...],
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
) -> tuple[Any, ...]:
    kh, kw = pair(op, "kernel_size", kernel_size)
    sh, sw = (kh, kw) if stride is None or stride in ([], ()) else pair(op, "stride", stride)
    ph, pw = pair(op, "padding", padding)
    dh, dw = pair(op, "dilation", dilation)
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{op}: kernel_size, stride and dilation must be positive, padding >= 0")
    for p, k, d in ((ph, kh, dh), (pw, kw, dw)):
        if p > (d * (k - 1) + 1) // 2:
            raise ValueError(
                f"{op}: pad should be at most half of effective kernel size, but got "
                f"pad={p}, kernel_size={k} and dilation={d}"
            )
    outs, his = [], []
    for n, k, s, p, d in ((shape[2], kh, sh, ph, dh), (shape[3], kw, sw, pw, dw)):
        span = n + 2 * p - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + p:  # the last window must start inside
            o -= 1
        if o < 1:
            raise ShapeError(
                f"{op}: output size is too small for input {shape} with kernel {k}, stride {s}, "
                f"padding {p} and dilation {d}"
            )
        outs.append(o)
        # padding after the input: p, or more where ceil_mode's last window runs past it
        his.append(max(p, (o - 1) * s + d * (k - 1) + 1 - n - p))
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), outs, his


def _meta_pooled(input: Tensor, x: Any, ho: int, wo: int, unbatched: bool) -> Tensor:
    """A pooling's result on meta, from the geometry alone: the generic path makes a pass
    per kernel tap, kh * kw of them, which a huge kernel on a huge meta map makes
    unbounded. (With a graph to record, meta takes the generic path.)"""
    shape = (x.shape[1], ho, wo) if unbatched else (x.shape[0], x.shape[1], ho, wo)
    return wrap(meta_array(shape, x.dtype), input._device)


class MaxPool2dBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        (arg,) = self.saved  # type: ignore[misc]
        xp = self.xp
        if self.unbatched:
            gy = gy[None]
        if self.tiles:  # each input element in exactly one window: write, don't add
            buf = xp.empty(self.padded, dtype=gy.dtype)
            for t, (rows, cs) in enumerate(self.taps):
                xp.multiply(gy, arg == t, out=buf[:, :, rows, cs])
        else:
            buf = xp.zeros(self.padded, dtype=gy.dtype)
            for t, (rows, cs) in enumerate(self.taps):
                buf[:, :, rows, cs] += gy * (arg == t)
        h, w = self.hw
        ph, pw = self.pad
        gx = xp.ascontiguousarray(buf[:, :, ph : ph + h, pw : pw + w])
        return (gx[0] if self.unbatched else gx,)


def max_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    op = "max_pool2d"
    floating(op, input)
    x, unbatched = _batched(op, input._data)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo), (hb, wb) = _pool_geometry(
        op, x.shape, kernel_size, stride, padding, dilation, ceil_mode
    )
    if type(x) is MetaArray and not (input._rg and _gm.enabled):
        y = _meta_pooled(input, x, ho, wo, unbatched)
        if not return_indices:
            return y
        return y, wrap(meta_array(y.shape, dtypes.int64.np), input._device)
    xp = input._device.xp
    h, w = x.shape[2], x.shape[3]
    if ph or pw or hb or wb:
        x = xp.pad(
            x, ((0, 0), (0, 0), (ph, hb), (pw, wb)), constant_values=x.dtype.type(float("-inf"))
        )
    taps = _taps(kh, kw, sh, sw, dh, dw, ho, wo)
    views = [x[:, :, rows, cs] for rows, cs in taps]
    y = views[0]
    for v in views[1:]:
        y = xp.maximum(y, v)  # NaN propagates, as PyTorch's
    if y is views[0]:
        y = y.copy()
    # Which tap holds the maximum, the first on ties as PyTorch's: the count of leading taps
    # that differ from it (boolean sums: far faster than masked assignment per tap).
    differ = views[0] != y
    arg = differ.astype(dtypes.int32.np if kh * kw > 127 else "int8")
    for v in views[1:-1]:
        differ &= v != y
        arg += differ
    out = wrap(y[0] if unbatched else y, input._device)
    if input._rg and _gm.enabled:
        node = MaxPool2dBackward()
        node.saved = (arg,)
        node.xp, node.taps, node.padded = xp, taps, x.shape
        node.hw, node.pad, node.unbatched = (h, w), (ph, pw), unbatched
        node.tiles = (kh, kw) == (sh, sw) and x.shape[2:] == (ho * kh, wo * kw) and dh == dw == 1
        record(node, out, input)
    if not return_indices:
        return out
    # PyTorch's indices: the flat position of each maximum within its (H, W) input plane
    i, j = arg // kw, arg % kw
    r = xp.arange(ho).reshape(ho, 1) * sh - ph + i * dh
    q = xp.arange(wo).reshape(1, wo) * sw - pw + j * dw
    idx = (r * w + q).astype(dtypes.int64.np)
    return out, wrap(idx[0] if unbatched else idx, input._device)


class AvgPool2dBackward(Node):
    def backward(self, gy: Any) -> tuple[Any]:
        xp = self.xp
        if self.unbatched:
            gy = gy[None]
        g = narrow(wide(gy) / self.divisor, gy.dtype)
        buf = xp.zeros(self.padded, dtype=gy.dtype)
        for rows, cs in self.taps:
            buf[:, :, rows, cs] += g
        h, w = self.hw
        ph, pw = self.pad
        gx = xp.ascontiguousarray(buf[:, :, ph : ph + h, pw : pw + w])
        return (gx[0] if self.unbatched else gx,)


def _divisor(xp: Any, n: int, k: int, s: int, p: int, o: int, include_pad: bool) -> Any:
    """Per output position along one axis, how many taps PyTorch's avg_pool2d counts."""
    start = xp.arange(o) * s - p
    end = xp.minimum(start + k, n + p)
    if include_pad:
        return end - start
    return xp.minimum(end, n) - xp.maximum(start, 0)


def avg_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    op = "avg_pool2d"
    floating(op, input)
    x, unbatched = _batched(op, input._data)
    (kh, kw), (sh, sw), (ph, pw), _, (ho, wo), (hb, wb) = _pool_geometry(
        op, x.shape, kernel_size, stride, padding, 1, ceil_mode
    )
    if type(x) is MetaArray and not (input._rg and _gm.enabled):
        return _meta_pooled(input, x, ho, wo, unbatched)
    xp = input._device.xp
    h, w = x.shape[2], x.shape[3]
    xw = wide(x)
    if ph or pw or hb or wb:
        xw = xp.pad(xw, ((0, 0), (0, 0), (ph, hb), (pw, wb)))
    taps = _taps(kh, kw, sh, sw, 1, 1, ho, wo)
    rows, cs = taps[0]
    total = xw[:, :, rows, cs].copy()
    for rows, cs in taps[1:]:
        total += xw[:, :, rows, cs]
    if divisor_override:
        divisor: Any = float(divisor_override)
    else:
        dh_ = _divisor(xp, h, kh, sh, ph, ho, count_include_pad)
        dw_ = _divisor(xp, w, kw, sw, pw, wo, count_include_pad)
        divisor = (dh_.reshape(ho, 1) * dw_.reshape(1, wo)).astype(total.dtype)
    y = narrow(total / divisor, x.dtype)
    out = wrap(y[0] if unbatched else y, input._device)
    if input._rg and _gm.enabled:
        node = AvgPool2dBackward()
        node.xp, node.taps, node.padded, node.divisor = xp, taps, xw.shape, divisor
        node.hw, node.pad, node.unbatched = (h, w), (ph, pw), unbatched
        record(node, out, input)
    return out
