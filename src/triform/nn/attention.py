"""Multi-head attention (Vaswani et al. 2017, §3.2): self-attention and cross-attention over one `attend`.

Self-attention reads queries, keys and values from the same sequence, through one projection;
cross-attention reads its queries from the decoder and its keys and values from the encoder's
output (§3.2.3). Keys and values go through a KV cache when one is given, so that generation never
recomputes them for tokens it has already seen. The projections are `nn.Linear` and `attend` is
torch's fused kernel unless others are handed in (`linear=`, `attend=`): models/build.py hands in
this device's from `triform.kernels`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from triform.nn.cache import LayerCache
    from triform.nn.position import Rotary


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """softmax(q · kᵀ · scale + mask) · v, scale = 1 / sqrt(d_head) by default (Vaswani §3.2.1), by
    torch's fused kernel. `mask` is boolean (True where allowed) or added to the scores."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


Attend = Callable[[Tensor, Tensor, Tensor, Tensor | None, bool, float, float | None], Tensor]
LinearFactory = Callable[..., nn.Linear]


class MultiHeadAttention(nn.Module):
    """What both kinds share: heads split and joined, `attend`, the output projection `out`."""

    def __init__(self, n_heads: int, d_head: int, *, dropout: float, scaled: bool, attend: Attend):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.inner = n_heads * d_head
        self.dropout = dropout
        self.scale = None if scaled else 1.0  # None: 1 / sqrt(d_head); T5 folds the scale into its init
        self.attend = attend

    def split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, -1, self.d_head).transpose(1, 2)  # (B, n_heads, T, d_head)

    def attend_heads(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, bias: Tensor | None
    ) -> Tensor:
        """Heads (B, n_heads, T, d_head) attended, joined and projected: (B, T, d_model)."""
        attention_mask = mask
        if bias is not None:
            attention_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
            attention_mask = attention_mask.to(q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        y = self.attend(q, k, v, attention_mask, is_causal and attention_mask is None, dropout_p, self.scale)
        batch, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, length, self.inner))


class SelfAttention(MultiHeadAttention):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int,
        *,
        bias: bool,
        dropout: float,
        scaled: bool = True,
        rotary: Rotary | None = None,
        linear: LinearFactory = nn.Linear,
        attend: Attend = attend,
    ):
        super().__init__(n_heads, d_head, dropout=dropout, scaled=scaled, attend=attend)
        # One matrix for queries, keys and values: a single GEMM instead of three.
        self.query_key_value = linear(d_model, 3 * self.inner, bias=bias)
        self.out = linear(self.inner, d_model, bias=bias)
        self.rotary = rotary

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        bias: Tensor | None = None,
        positions: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x: (B, T, d_model); mask: boolean, broadcastable to (B, n_heads, T, T_keys), True where
        attention is allowed; bias: added to the scores, broadcastable likewise; positions: (B, T),
        for rotary positions. Returns (B, T, d_model)."""
        q, k, v = (self.split_heads(t) for t in self.query_key_value(x).split(self.inner, dim=-1))
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, n_heads, T_cached + T, d_head)
        return self.attend_heads(q, k, v, mask, is_causal, bias)


class CrossAttention(MultiHeadAttention):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int,
        *,
        bias: bool,
        dropout: float,
        scaled: bool = True,
        linear: LinearFactory = nn.Linear,
        attend: Attend = attend,
    ):
        super().__init__(n_heads, d_head, dropout=dropout, scaled=scaled, attend=attend)
        self.query = linear(d_model, self.inner, bias=bias)
        self.key_value = linear(d_model, 2 * self.inner, bias=bias)  # one GEMM for keys and values
        self.out = linear(self.inner, d_model, bias=bias)

    def forward(
        self, x: Tensor, memory: Tensor, *, mask: Tensor | None = None, cache: LayerCache | None = None
    ) -> Tensor:
        """x: (B, T, d_model) queries; memory: (B, S, d_model), the encoder's output; mask: boolean,
        broadcastable to (B, n_heads, T, S), True at real source tokens. Returns (B, T, d_model)."""
        q = self.split_heads(self.query(x))
        if cache is not None and cache.cross is not None:
            k, v = cache.cross  # computed once per source
        else:
            k, v = (self.split_heads(t) for t in self.key_value(memory).split(self.inner, dim=-1))
            if cache is not None:
                # Kept in the cache's dtype, as the self-attention keys are: a decoding step under
                # bf16 autocast may attend in fp32 (`triform.kernels.attend`) and would otherwise
                # cast them again at every step.
                k, v = k.to(cache.keys.dtype), v.to(cache.keys.dtype)
                cache.cross = (k, v)
        return self.attend_heads(q, k, v, mask, False, None)
