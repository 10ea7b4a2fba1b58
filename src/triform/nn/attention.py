"""Multi-head attention (Vaswani et al. 2017, §3.2) on torch's scaled_dot_product_attention.

One class serves self-attention and cross-attention. Keys and values go through a KV cache when one
is given, so that generation never recomputes them for tokens it has already seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.nn.dropout import dropout
from triform.nn.linear import Linear

if TYPE_CHECKING:
    from triform.nn.cache import LayerCache
    from triform.nn.position import Rotary


class Attention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int,
        *,
        bias: bool,
        dropout: float,
        scaled: bool = True,
        cross: bool = False,
        rotary: Rotary | None = None,
    ):
        super().__init__()
        self.n_heads, self.d_head, self.cross = n_heads, d_head, cross
        inner = n_heads * d_head
        if cross:
            self.query = Linear(d_model, inner, bias=bias)
            self.key_value = Linear(d_model, 2 * inner, bias=bias)
        else:
            # One matrix for queries, keys and values: a single GEMM instead of three.
            self.query_key_value = Linear(d_model, 3 * inner, bias=bias)
        self.out = Linear(inner, d_model, bias=bias)
        self.dropout = dropout
        self.scale = None if scaled else 1.0  # None: SDPA's 1 / sqrt(d_head)
        self.rotary = rotary

    def split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, -1, self.d_head).transpose(1, 2)  # (B, n_heads, T, d_head)

    def forward(
        self,
        x: Tensor,
        *,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        bias: Tensor | None = None,
        positions: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x: (B, T, d_model); memory: (B, S, d_model) for cross-attention; mask: boolean,
        broadcastable to (B, n_heads, T, T_keys), True where attention is allowed; bias: added to
        the scores, broadcastable likewise."""
        inner = self.n_heads * self.d_head
        if self.cross:
            q = self.split_heads(self.query(x))
            if cache is not None and cache.cross is not None:
                k, v = cache.cross  # computed once per source
            else:
                k, v = (self.split_heads(t) for t in self.key_value(memory).split(inner, dim=-1))
                if cache is not None:
                    # Kept in the cache's dtype, as the self-attention keys are: a decoding step
                    # under bf16 autocast attends in fp32 (`attend`) and would otherwise cast
                    # them again at every step.
                    k, v = k.to(cache.keys.dtype), v.to(cache.keys.dtype)
                    cache.cross = (k, v)
        else:
            q, k, v = (self.split_heads(t) for t in self.query_key_value(x).split(inner, dim=-1))
            if self.rotary is not None:
                q, k = self.rotary(q, positions), self.rotary(k, positions)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, n_heads, T_cached + T, d_head)

        attention_mask = mask
        if bias is not None:
            attention_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
            attention_mask = attention_mask.to(q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        y = attend(q, k, v, attention_mask, is_causal and attention_mask is None, dropout_p, self.scale)
        batch, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, length, inner))  # (B, T, d_model)


# Largest score matrix (batch · heads · queries · keys) attended in the written-out form below.
EXPLICIT_LIMIT = 2**24


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """softmax(q · kᵀ · scale + mask) · v, scale = 1 / sqrt(d_head) by default (Vaswani §3.2.1).

    Torch's fused kernel, but on a CPU under bf16 autocast, as measured at the shapes of
    benchmarks/run.py (torch 2.13): a single query (a decoding step) is attended in fp32, 4 times
    faster there than in bf16 (the KV cache is in the weights' dtype, fp32); more queries are
    attended written out, two bf16 matrix products around a softmax that accumulates in fp32,
    2 to 4 times faster than the fused kernel forward and backward, for the price of holding the
    scores, hence a limit on their size.
    """
    bf16_autocast = (
        q.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and (torch.get_autocast_dtype("cpu") == torch.bfloat16)
    )
    if bf16_autocast and q.shape[2] == 1:
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.float()  # an additive bias (T5's), in the query's dtype as the kernel requires
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
            )
    written_out = bf16_autocast or (q.device.type == "cpu" and q.dtype == k.dtype == v.dtype == torch.bfloat16)
    if not written_out or q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] > EXPLICIT_LIMIT:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-1, -2)  # (B, n_heads, T, T_keys)
    if is_causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:  # added rather than filled in: the backward pass of an addition is free
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=scores.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        scores = scores + mask.to(scores.dtype)
    weights = scores.softmax(dim=-1)
    weights = dropout(weights, dropout_p)
    return weights @ v  # (B, n_heads, T, d_head)
