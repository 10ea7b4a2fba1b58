"""Queries, keys and values as heads of one joined projection (SelfAttention's `query_key_value`,
CrossAttention's `key_value`), and their gradients joined back into the projection's without a copy
where an attention kernel wrote them side by side.

Split by `Tensor.split`, autograd joins the three gradients with `torch.cat`, a fresh tokens x
(q + k + v) tensor each layer: 1.4 ms a layer of the benchmark's GPT in fp32 (16 x 256 tokens, AMD
EPYC Zen 5, 2 threads). triform's training attention (kernels/native.py `attention_backward`) writes
dq, dk and dv into one such tensor when q, k and v were split so; this split's backward then hands that
tensor on as it is, and concatenates only gradients that are not laid out so (another attention
kernel's, or a rotary position's or a norm's in between).
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor


def split_joined(joined: Tensor, sizes: tuple[int, ...], d_head: int) -> tuple[Tensor, ...]:
    """joined (B, T, sum(sizes)) split on its last dimension into `sizes`, each as heads (B, heads, T,
    d_head): views of `joined`."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled() or not joined.requires_grad:
        return _split(joined, sizes, d_head)
    return _SplitHeads.apply(joined, sizes, d_head)


def _heads(x: Tensor, d_head: int) -> Tensor:
    batch, length, _ = x.shape
    return x.view(batch, length, -1, d_head).transpose(1, 2)


def side_by_side(parts: tuple[Tensor, ...], sizes: tuple[int, ...]) -> Tensor | None:
    """The (B, T, sum(sizes)) tensor whose columns `parts` (each (B, heads, T, d_head)) are, split as
    `split_joined` splits, when they are laid out so in one storage; else None."""
    first = parts[0]
    if any(part is None for part in parts) or len({part.dtype for part in parts}) > 1:
        return None
    batch, _, length, d_head = first.shape
    width = sum(sizes)
    offset = first.storage_offset()
    for part, size, start in zip(parts, sizes, accumulate(sizes, initial=0)):
        if part.untyped_storage().data_ptr() != first.untyped_storage().data_ptr():
            return None
        if part.stride() != (length * width, d_head, width, 1) or part.storage_offset() != offset + start:
            return None
        if part.shape[1] * d_head != size or (part.shape[0], part.shape[2], part.shape[3]) != (batch, length, d_head):
            return None
    return first.as_strided((batch, length, width), (length * width, width, 1), offset)


def joined_like(*parts: Tensor) -> tuple[Tensor, ...] | None:
    """Empty gradients for `parts` (q, k and v of a self-attention, or k and v of a cross-attention's
    `key_value`) laid out as they are, side by side in one new tensor, when they are `split_joined`'s
    views of one joined projection; else None."""
    sizes = tuple(t.shape[1] * t.shape[3] for t in parts)
    joined = side_by_side(parts, sizes)
    if joined is None:
        return None
    return _split(torch.empty(joined.shape, dtype=joined.dtype, device=joined.device), sizes, parts[0].shape[3])


def _split(joined: Tensor, sizes: tuple[int, ...], d_head: int) -> tuple[Tensor, ...]:
    return tuple(_heads(part, d_head) for part in joined.split(sizes, dim=-1))


class _SplitHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, joined: Tensor, sizes: tuple[int, ...], d_head: int):
        ctx.sizes, ctx.d_head, ctx.shape = sizes, d_head, joined.shape
        ctx.like = dict(dtype=joined.dtype, device=joined.device)
        return _split(joined, sizes, d_head)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        joined = side_by_side(grads, ctx.sizes)
        if joined is None:  # each gradient copied once, into its place: not laid out as rows, then concatenated
            joined = torch.empty(ctx.shape, **ctx.like)
            for grad, part in zip(grads, _split(joined, ctx.sizes, ctx.d_head)):
                part.zero_() if grad is None else part.copy_(grad)
        return joined, None, None
