"""`embedding` (a row gather whose backward adds rows back with the backend's index_add)
and `one_hot`."""

from __future__ import annotations

from typing import Any

from engine import dtypes
from engine.autograd import Node, save_versions
from engine.autograd import grad_mode as _gm
from engine.backends.meta import MetaArray
from engine.errors import ShapeError
from engine.functions.common import Tensor, check_device, record, wrap
from engine.functions.index import bump
from engine.nn.functional._layer_common import floating


def _indices(op: str, input: Tensor, n: int) -> Any:
    if not isinstance(input, Tensor) or input._data.dtype.kind not in "iu":
        kind = input.dtype if isinstance(input, Tensor) else type(input).__name__
        raise TypeError(f"{op}: expected an integer (int64 or int32) index tensor, got {kind}")
    idx = input._data
    if not idx.size:
        return idx
    if type(idx) is MetaArray:
        # a meta index has no values to check, but no value fits an empty table
        if n == 0:
            raise IndexError(f"{op}: index out of range in self (indices must lie in [0, 0))")
        return idx
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise IndexError(
            f"{op}: index out of range in self (indices must lie in [0, {n}), got "
            f"values from {int(idx.min())} to {int(idx.max())})"
        )
    return idx


class EmbeddingBackward(Node):
    def backward(self, gy: Any) -> tuple[None, Any]:
        (idx,) = self.saved  # type: ignore[misc]
        xp = self.xp
        n, d = self.wshape
        flat = idx.reshape(-1)
        g = gy.reshape(-1, d)
        if self.counts is not None:  # scale_grad_by_freq: each row's gradient over its count
            g = g / self.counts[flat][:, None].astype(g.dtype)
        if self.padding_idx is not None:  # the padding row never gets a gradient
            # where, not a boolean-mask gather: the mask's size would be a host sync on CuPy
            g = xp.where((flat != self.padding_idx)[:, None], g, gy.dtype.type(0))
        gw = xp.zeros((n, d), dtype=gy.dtype)
        self.ops.index_add(gw, flat, g)
        return None, gw


def _renorm(weight: Tensor, idx: Any, max_norm: float, norm_type: float) -> None:
    """Rows of weight that idx uses, scaled in place to norm <= max_norm (no graph), as
    PyTorch's embedding_renorm_ (with its 1e-7 guard)."""
    xp = weight._device.xp
    wd = weight._data
    rows = xp.unique(idx.reshape(-1))
    sub = wd[rows].astype(dtypes.float32.np if wd.itemsize == 2 else wd.dtype)
    norms = (xp.abs(sub) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    wd[rows] = (sub * scale[:, None]).astype(wd.dtype)
    bump(weight)


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    floating("embedding", weight)
    check_device("embedding", weight, input)
    if sparse:
        raise ValueError("embedding: sparse gradients are not supported; use sparse=False")
    wd = weight._data
    if wd.ndim != 2:
        raise ShapeError(f"embedding: weight must be 2-D, got shape {wd.shape}")
    n = wd.shape[0]
    idx = _indices("embedding", input, n)
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx {padding_idx} must be within num_embeddings")
        padding_idx %= n
    if max_norm is not None:
        _renorm(weight, idx, max_norm, norm_type)
    xp = weight._device.xp
    out = wrap(xp.take(wd, idx, axis=0), weight._device)
    if weight._rg and _gm.enabled:
        node = EmbeddingBackward()
        node.saved = (idx,)
        node.xp, node.ops = xp, weight._device.ops
        node.wshape = wd.shape
        node.padding_idx = padding_idx
        node.counts = xp.bincount(idx.reshape(-1), minlength=n) if scale_grad_by_freq else None
        save_versions(node, input)
        record(node, out, input, weight)
    return out


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    if not isinstance(tensor, Tensor) or tensor._data.dtype != dtypes.int64.np:
        kind = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
        raise TypeError(f"one_hot is only applicable to index tensor of type int64, got {kind}")
    td = tensor._data
    if num_classes == -1:
        if td.size == 0:
            raise RuntimeError("one_hot: can not infer total number of classes from empty tensor")
        num_classes = int(td.max()) + 1
    _indices("one_hot", tensor, num_classes)
    xp = tensor._device.xp
    out = (td[..., None] == xp.arange(num_classes)).astype(dtypes.int64.np)
    return wrap(out, tensor._device)
