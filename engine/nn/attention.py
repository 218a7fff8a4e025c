"""`MultiheadAttention`: PyTorch's parameters, state-dict keys, masks and results.

The attention itself is the fused `scaled_dot_product_attention` when no weights are
asked for (as PyTorch's, which also calls SDPA then); with `need_weights=True` it is
composed of differentiable ops so that the returned weights carry gradients too.
"""

from __future__ import annotations

import math
from typing import Any

from engine import dtypes
from engine.errors import ShapeError
from engine.factories import empty
from engine.nn import init
from engine.nn.functional.attention import scaled_dot_product_attention
from engine.nn.functional.dropout import dropout as dropout_fn
from engine.nn.functional.linear import linear
from engine.nn.linear import Linear
from engine.nn.module import Module
from engine.nn.parameter import Parameter
from engine.tensor import Tensor, wrap

_OP = "MultiheadAttention"


class NonDynamicallyQuantizableLinear(Linear):
    """PyTorch's name for the output projection's class (a plain Linear here)."""


def _additive(mask: Tensor | None, name: str, like: Tensor) -> Tensor | None:
    """PyTorch's `_canonical_mask`: a bool mask (True = masked out) as 0 / -inf in like's
    dtype; a float mask is already additive."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{_OP}: {name} must be a Tensor, got {type(mask).__name__}")
    if mask.dtype == dtypes.bool_:
        xp = mask._device.xp
        return wrap(xp.where(mask._data, -math.inf, 0.0).astype(like._data.dtype), mask._device)
    if not mask.is_floating_point():
        raise TypeError(f"{_OP}: only bool and floating types of {name} are supported")
    return mask


class MultiheadAttention(Module):
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"{_OP}: embed_dim and num_heads must be greater than 0, got "
                f"embed_dim={embed_dim} and num_heads={num_heads} instead"
            )
        if embed_dim % num_heads:
            raise ValueError(
                f"{_OP}: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError(
                f"{_OP}: add_bias_kv and add_zero_attn are not supported by the engine"
            )
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.add_zero_attn = add_zero_attn
        kw = {"device": device, "dtype": dtype}
        # Registration order as PyTorch's, so state-dict keys come out in the same order.
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = Parameter(empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = Parameter(empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **kw)
        self.bias_k = self.bias_v = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
        e = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
        if not self._qkv_same_embed_dim:
            return (
                linear(query, self.q_proj_weight, bq),
                linear(key, self.k_proj_weight, bk),
                linear(value, self.v_proj_weight, bv),
            )
        w = self.in_proj_weight
        # Three GEMMs on slices of the packed weight even for self-attention: slicing one
        # packed (N, L, 3E) output instead makes each slice's backward fill a zero array
        # of the whole output (measured 6-12 ms a step on the gpt benchmark).
        return (
            linear(query, w[:e], bq),
            linear(key, w[e : 2 * e], bk),
            linear(value, w[2 * e :], bv),
        )

    def _check(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{_OP}: {name} must be a Tensor, got {type(t).__name__}")
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ShapeError(
                f"{_OP}: query, key and value must all be 3-d (batched) or 2-d (unbatched), "
                f"got shapes {query.shape}, {key.shape} and {value.shape}"
            )
        e, kd, vd = query.shape[-1], key.shape[-1], value.shape[-1]
        if (e, kd, vd) != (self.embed_dim, self.kdim, self.vdim):
            raise ShapeError(
                f"{_OP}: expected query, key and value feature sizes "
                f"({self.embed_dim}, {self.kdim}, {self.vdim}), got shapes {query.shape}, "
                f"{key.shape} and {value.shape}"
            )
        if key.shape[:-1] != value.shape[:-1]:
            raise ShapeError(
                f"{_OP}: key shape {key.shape} does not match value shape {value.shape}"
            )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        self._check(query, key, value)
        batched = query.ndim == 3
        # Work batch-first (N, L, E) throughout: the head split is then a reshape and one
        # permute either way, and the values are PyTorch's.
        seq_first = batched and not self.batch_first
        if batched:
            n = query.shape[1] if seq_first else query.shape[0]
            L = query.shape[0] if seq_first else query.shape[1]
            S = key.shape[0] if seq_first else key.shape[1]
        else:
            n, L, S = 1, query.shape[0], key.shape[0]
        if key_padding_mask is not None:
            want = (n, S) if batched else (S,)
            if tuple(key_padding_mask.shape) != want:
                raise ShapeError(
                    f"{_OP}: expected key_padding_mask of shape {want}, got "
                    f"{tuple(key_padding_mask.shape)}"
                )
        q, k, v = self._project(query, key, value)
        hd = self.head_dim
        q, k, v = (self._heads(t, seq_first, batched) for t in (q, k, v))
        if is_causal and attn_mask is None:
            raise RuntimeError(
                f"{_OP}: need attn_mask if specifying the is_causal hint; pass the causal "
                "mask as attn_mask as well"
            )
        mask = None
        use_causal = is_causal and key_padding_mask is None and not need_weights
        if not use_causal:
            mask = self._merged_mask(attn_mask, key_padding_mask, q, n, L, S)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            attn = scores.softmax(-1)
            if p > 0.0:
                attn = dropout_fn(attn, p)
            out = attn @ v
            weights = attn.mean(dim=1) if average_attn_weights else attn
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = scaled_dot_product_attention(q, k, v, mask, p, is_causal=use_causal)
        if seq_first:
            out = out.permute(2, 0, 1, 3).reshape(L, n, self.embed_dim)
        else:
            out = out.permute(0, 2, 1, 3).reshape(n, L, self.embed_dim)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(0)
        return out, weights

    def _heads(self, t: Tensor, seq_first: bool, batched: bool) -> Tensor:
        """(L, N, E), (N, L, E) or (L, E) projections as (N, heads, L, head_dim)."""
        h, hd = self.num_heads, self.head_dim
        if not batched:
            return t.reshape(1, t.shape[0], h, hd).permute(0, 2, 1, 3)
        if seq_first:
            return t.reshape(t.shape[0], t.shape[1], h, hd).permute(1, 2, 0, 3)
        return t.reshape(t.shape[0], t.shape[1], h, hd).permute(0, 2, 1, 3)

    def _merged_mask(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        q: Tensor,
        n: int,
        L: int,
        S: int,
    ) -> Tensor | None:
        """attn_mask and key_padding_mask as one additive mask, broadcastable to (N, H, L, S)."""
        am = _additive(attn_mask, "attn_mask", q)
        kpm = _additive(key_padding_mask, "key_padding_mask", q)
        h = self.num_heads
        if am is not None:
            if am.ndim == 2:
                if tuple(am.shape) != (L, S):
                    raise ShapeError(
                        f"{_OP}: the shape of the 2D attn_mask is {tuple(am.shape)}, but "
                        f"should be {(L, S)}"
                    )
                am = am.reshape(1, 1, L, S)
            elif am.ndim == 3:
                if tuple(am.shape) != (n * h, L, S):
                    raise ShapeError(
                        f"{_OP}: the shape of the 3D attn_mask is {tuple(am.shape)}, but "
                        f"should be {(n * h, L, S)}"
                    )
                am = am.reshape(n, h, L, S)
            else:
                raise ShapeError(f"{_OP}: attn_mask's dimension {am.ndim} is not supported")
        if kpm is not None:
            kpm = kpm.reshape(n, 1, 1, S)
            am = kpm if am is None else am + kpm
        return am
