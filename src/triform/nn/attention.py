"""Multi-head attention (Vaswani et al. 2017, §3.2): self-attention and cross-attention over one `attend`.

Self-attention reads queries, keys and values from the same sequence, through one projection;
cross-attention reads its queries from the decoder and its keys and values from the encoder's
output (§3.2.3). Keys and values go through a KV cache when one is given, so that generation never
recomputes them for tokens it has already seen. With fewer key/value heads than query heads
(grouped-query attention, Ainslie et al. 2023), each key/value head serves a group of query heads:
the projections and the cache hold only the key/value heads, repeated to every query head of their
group just before attending. Queries and keys may be normalised per head (Qwen3's q/k norms).
The projections are `nn.Linear` and `attend` is torch's fused kernel unless others are handed in
(`linear=`, `attend=`): models/build.py hands in this device's from `triform.kernels`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.nn.joined import split_joined

if TYPE_CHECKING:
    from triform.nn.cache import LayerCache
    from triform.nn.position import Rotary


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """softmax(q · kᵀ · scale + mask) · v, scale = 1 / sqrt(d_head) by default (Vaswani §3.2.1), by
    torch's fused kernel. `mask` is boolean (True where allowed) or added to the scores. Keys and values
    from a cache in another dtype (bf16 under int8 weights) are cast to the queries'."""
    if q.dtype == torch.float32 and k.dtype != q.dtype:  # bf16 queries under autocast: autocast casts
        k, v = k.to(q.dtype), v.to(q.dtype)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


Attend = Callable[[Tensor, Tensor, Tensor, Tensor | None, bool, float, float | None], Tensor]
LinearFactory = Callable[..., nn.Linear]


class MultiHeadAttention(nn.Module):
    """What both kinds share: heads split and joined, `attend`, the output projection `out`."""

    def __init__(
        self,
        n_heads: int,
        d_head: int,
        *,
        dropout: float,
        scaled: bool,
        attend: Attend,
        n_kv_heads: int | None = None,
        query_norm: nn.Module | None = None,
        key_norm: nn.Module | None = None,
    ):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.n_kv_heads = n_kv_heads or n_heads
        self.inner = n_heads * d_head
        self.kv_inner = self.n_kv_heads * d_head
        self.query_norm, self.key_norm = query_norm, key_norm  # over each head's vector, before rotary
        self.dropout = dropout
        self.scale = None if scaled else 1.0  # None: 1 / sqrt(d_head); T5 folds the scale into its init
        self.attend = attend

    def split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, -1, self.d_head).transpose(1, 2)  # (B, heads, T, d_head)

    def attend_heads(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, bias: Tensor | None
    ) -> Tensor:
        """Queries (B, n_heads, T, d_head) attended over keys and values (B, n_kv_heads, T_keys, d_head),
        the heads joined and projected: (B, T, d_model)."""
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # key/value head j serves query heads j * groups ... (j + 1) * groups - 1
            k, v = (
                k.repeat_interleave(groups, dim=1),
                v.repeat_interleave(groups, dim=1),
            )  # (B, n_heads, T_keys, d_head)
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
        n_kv_heads: int | None = None,
        qkv_bias: bool | None = None,
        query_norm: nn.Module | None = None,
        key_norm: nn.Module | None = None,
    ):
        super().__init__(
            n_heads,
            d_head,
            dropout=dropout,
            scaled=scaled,
            attend=attend,
            n_kv_heads=n_kv_heads,
            query_norm=query_norm,
            key_norm=key_norm,
        )
        # One matrix for queries, keys and values: a single GEMM instead of three. qkv_bias (None: as
        # bias) lets them have biases where the output projection has none (Qwen2).
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.query_key_value = linear(d_model, self.inner + 2 * self.kv_inner, bias=qkv_bias)
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
        sizes = (self.inner, self.kv_inner, self.kv_inner)
        q, k, v = split_joined(self.query_key_value(x), sizes, self.d_head)  # views; nn/joined.py
        if self.query_norm is not None:
            q, k = self.query_norm(q), self.key_norm(k)
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, n_kv_heads, T_cached + T, d_head)
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
        n_kv_heads: int | None = None,
        qkv_bias: bool | None = None,
        query_norm: nn.Module | None = None,
        key_norm: nn.Module | None = None,
    ):
        super().__init__(
            n_heads,
            d_head,
            dropout=dropout,
            scaled=scaled,
            attend=attend,
            n_kv_heads=n_kv_heads,
            query_norm=query_norm,
            key_norm=key_norm,
        )
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.query = linear(d_model, self.inner, bias=qkv_bias)
        self.key_value = linear(d_model, 2 * self.kv_inner, bias=qkv_bias)  # one GEMM for keys and values
        self.out = linear(self.inner, d_model, bias=bias)

    def forward(
        self, x: Tensor, memory: Tensor, *, mask: Tensor | None = None, cache: LayerCache | None = None
    ) -> Tensor:
        """x: (B, T, d_model) queries; memory: (B, S, d_model), the encoder's output; mask: boolean,
        broadcastable to (B, n_heads, T, S), True at real source tokens. Returns (B, T, d_model)."""
        q = self.split_heads(self.query(x))
        if self.query_norm is not None:
            q = self.query_norm(q)
        k, v = self.source_keys_values(memory, cache)
        return self.attend_heads(q, k, v, mask, False, None)

    def source_keys_values(self, memory: Tensor, cache: LayerCache | None = None) -> tuple[Tensor, Tensor]:
        """The keys and values (B, n_kv_heads, S, d_head) of `memory`: the cache's, where it holds them
        (computed once per source), else computed, and kept in the cache where there is one."""
        if cache is not None and cache.cross is not None:
            return cache.cross
        k, v = split_joined(self.key_value(memory), (self.kv_inner, self.kv_inner), self.d_head)  # nn/joined.py
        if self.key_norm is not None:
            k = self.key_norm(k)
        if cache is not None:
            # Kept in the cache's dtype, as the self-attention keys are: a decoding step under
            # bf16 autocast may attend in fp32 (`triform.kernels.attend`) and would otherwise
            # cast them again at every step.
            k, v = k.to(cache.keys.dtype), v.to(cache.keys.dtype)
            cache.cross = (k, v)
        return k, v
