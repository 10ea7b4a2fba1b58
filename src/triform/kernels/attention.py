"""Attention on a CPU under bf16: the cases where torch's fused kernel is not the fastest.

Measured on an AMD EPYC at the shapes of benchmarks/run.py (torch 2.13): a single query (a decoding
step) is attended in fp32, 4 times faster there than in bf16 (the KV cache is in the weights' dtype,
fp32); more queries are attended written out, two bf16 matrix products around a softmax that
accumulates in fp32, 2 to 4 times faster than the fused kernel forward and backward, for the price
of holding the scores, hence a limit on their size. Everything else goes to the textbook `attend`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from triform.kernels.dropout import dropout
from triform.nn import attention as textbook

# Largest score matrix (batch · heads · queries · keys) attended in the written-out form below.
EXPLICIT_LIMIT = 2**24


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """softmax(q · kᵀ · scale + mask) · v, as `triform.nn.attention.attend`, by the kernel fastest here."""
    bf16_autocast = (
        q.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and (torch.get_autocast_dtype("cpu") == torch.bfloat16)
    )
    if bf16_autocast and q.shape[2] == 1:
        return single_query_fp32(q, k, v, mask, is_causal, dropout_p, scale)
    written_out = bf16_autocast or (q.device.type == "cpu" and q.dtype == k.dtype == v.dtype == torch.bfloat16)
    if not written_out or q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] > EXPLICIT_LIMIT:
        return textbook.attend(q, k, v, mask, is_causal, dropout_p, scale)
    return written_out_bf16(q, k, v, mask, is_causal, dropout_p, scale)


def single_query_fp32(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """The fused kernel in fp32, outside autocast: one query against an fp32 KV cache."""
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.float()  # an additive bias (T5's), in the query's dtype as the kernel requires
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )


def written_out_bf16(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """Two bf16 products around a softmax (Vaswani §3.2.1, eq. 1), the scores held in memory."""
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
