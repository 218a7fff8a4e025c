"""`TransformerEncoderLayer`: self-attention and a feed-forward block, post- or pre-norm,
with PyTorch's submodule names (so its state-dict keys) and forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.nn.attention import MultiheadAttention
from engine.nn.containers import plain
from engine.nn.dropout import Dropout
from engine.nn.functional.activation import gelu, relu
from engine.nn.functional.linear import linear_act
from engine.nn.linear import Linear
from engine.nn.module import Module
from engine.nn.normalization import LayerNorm
from engine.tensor import Tensor

# the activation functions linear_act runs fused with the Linear before them
_FUSED: dict[Callable[[Tensor], Tensor], str] = {relu: "relu", gelu: "gelu"}


def _activation(activation: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if activation == "relu":
        return relu
    if activation == "gelu":
        return gelu
    if isinstance(activation, str):
        raise RuntimeError(
            f"TransformerEncoderLayer: activation should be relu/gelu, not {activation}"
        )
    return activation


class TransformerEncoderLayer(Module):
    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
    ) -> Tensor:
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        fused = _FUSED.get(self.activation)
        if fused is not None and type(self.linear1) is Linear and plain(self.linear1):
            # the bias and activation in the GEMM's one pass (linear_act), as Sequential does
            h = linear_act(x, self.linear1.weight, self.linear1.bias, fused)
        else:
            h = self.activation(self.linear1(x))
        return self.dropout2(self.linear2(self.dropout(h)))
