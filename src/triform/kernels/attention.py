"""Attention on a CPU by the kernel measured fastest here for each shape class (`kernels/calibrate.py`).

The candidates:
- `sdpa`: torch's fused kernel, F.scaled_dot_product_attention (flash attention on a CPU where it
  applies, its math path elsewhere), the textbook `attend`;
- `written-out`: two matrix products around a softmax that accumulates in fp32 (Vaswani §3.2.1,
  eq. 1), for the price of holding the scores, hence a limit on their size; on an AMD EPYC it ran bf16
  attention 2 to 4 times faster than the fused kernel, forward and backward;
- `fp32` (one query under bf16 autocast: a decoding step): the fused kernel in fp32 against the KV
  cache, which is in the weights' dtype; 4 times faster than bf16 on that EPYC;
- `native`: triform's own kernels (`kernels/native.py`). For one query (no autograd, no dropout, an
  fp32 or bf16 cache: a decoding step) it reads the cache once and sums in fp32; on that EPYC it
  attended a bf16 cache of 8 rows of 6 heads over 64 keys in 90 µs against the fused kernel's 275 to
  424. For many queries in fp32, or in bf16 where the CPU has AVX512-BF16's pair products (a mask
  that needs no gradient, dropout or none; training, a prompt) each (batch, head) pair is a thread's,
  its scores kept in that core's caches and formed again going backward (`NativeAttention`): on an
  AMD EPYC (Zen 5, 2 threads; `python benchmarks/attention.py`) a causal layer of the benchmark's
  GPT (16 × 6 heads, 256 queries of 64) took 15 ms forward and backward in fp32 against the fused
  kernel's 35, and 9.3 ms in bf16 against 13.4 for the written-out bf16 products; a BERT layer with
  a padding mask and dropout 0.1, 12.8 ms in fp32 against 22 written out, and in bf16 9.1, as
  written out (calibration picks either).
Each is timed in the context it will run in (autocast, autograd: forward and backward), once per
class: dtype, batch · heads, queries and keys (rounded up to powers of two), d_head, the kind of mask,
dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from triform.kernels import native
from triform.kernels.calibrate import FIELDS, calibration, rows_class, with_backward
from triform.kernels.dropout import dropout, native_draw
from triform.nn import attention as textbook

# Largest score matrix (batch · heads · queries · keys) attended in the written-out form below.
EXPLICIT_LIMIT = 2**24
# Largest score matrix of one (batch, head) pair (queries · keys) that the native kernel holds: a
# thread's buffers are twice this many fp32 going backward.
NATIVE_PAIR_LIMIT = 2**20
FIELDS["attention"] = ("dtype", "batch·heads≤", "queries≤", "keys≤", "d_head", "mask", "dropout", "grad", "threads")


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """softmax(q · kᵀ · scale + mask) · v, as `triform.nn.attention.attend`, by the kernel fastest here.
    Keys and values from a cache in another dtype than the queries' (bf16 under int8 weights) are read
    as they are by triform's decoding attention, without timing: every other kernel would first copy
    the whole cache to the queries' dtype, reading it once more and writing twice its bytes, at each
    step. For more queries they are cast and the candidates timed as usual."""
    if q.dtype == torch.float32 and k.dtype != q.dtype:  # (bf16 queries under autocast: the candidates' case)
        if not torch.compiler.is_compiling() and single_query_native(q, k) and v.dtype == k.dtype:
            return native_single_query(q, k, v, mask, is_causal, dropout_p, scale)
        k, v = k.to(q.dtype), v.to(q.dtype)
    names = candidates(q, k, v, mask, dropout_p)
    if len(names) == 1:
        return textbook.attend(q, k, v, mask, is_causal, dropout_p, scale)
    args = (mask, is_causal, dropout_p, scale)
    name = calibration().choose(
        attention_key(q, k, *args),
        names,
        lambda: with_backward(lambda n, qkv: KERNELS[n](*qkv, *args), names, (q, k, v), grad_of(q, k, v)),
    )
    return KERNELS[name](q, k, v, *args)


def candidates(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> tuple[str, ...]:
    if q.device.type != "cpu" or torch.compiler.is_compiling():
        return ("sdpa",)
    names = ["sdpa"]
    scores = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
    if q.dtype in (torch.float32, torch.bfloat16) and scores <= EXPLICIT_LIMIT:
        names.append("written-out")
    if q.shape[2] == 1 and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        names.append("fp32")
    if single_query_native(q, k) or many_queries_native(q, k, v, mask, dropout_p):
        names.append("native")
    return tuple(names)


def single_query_native(q: Tensor, k: Tensor) -> bool:
    """Whether triform's decoding attention may serve this call: one query, fp32 or bf16, no autograd
    (values of another dtype than the keys', dropout and causality send `native_single_query` to the
    fused kernel)."""
    one_query = q.shape[2] == 1 and q.dtype in native.GEMV_DTYPES and k.dtype in native.GEMV_DTYPES
    no_grad = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))
    return one_query and no_grad and native.library() is not None


def many_queries_native(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> bool:
    """Whether triform's attention over many queries may serve this call: on the CPU, fp32 outside
    autocast or bf16 where the CPU has bf16 pair products (AVX512-BF16), d_head a multiple of 16, a
    pair's scores within NATIVE_PAIR_LIMIT, and no mask, a causal one, or a bool or float one that
    needs no gradient (a padding mask, a fixed bias); with or without dropout on the probabilities."""
    library = native.library() if q.device.type == "cpu" else None
    if library is None or not (q.dtype == k.dtype == v.dtype):
        return False
    fp32 = q.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    bf16 = q.dtype == torch.bfloat16 and q.dtype in library.training_attention_dtypes
    sizes = q.shape[-1] % 16 == 0 and v.shape[-1] == q.shape[-1] and q.shape[2] * k.shape[2] <= NATIVE_PAIR_LIMIT
    plain = q.shape[2] > 1 and (mask is None or native_mask(mask, q, k) is not None)
    return (fp32 or bf16) and sizes and plain


def native_mask(mask: Tensor, q: Tensor, k: Tensor) -> Tensor | None:
    """The mask as the native kernel reads it, bool or fp32 expanded to (B, H, T, T_keys); None where it
    cannot (a mask that needs its gradient, one of other sizes)."""
    if (mask.requires_grad and torch.is_grad_enabled()) or mask.dim() > 4 or mask.device.type != "cpu":
        return None
    if mask.dtype != torch.bool and not mask.is_floating_point():
        return None
    mask = mask if mask.dtype == torch.bool else mask.detach().float()
    try:
        return mask.view((1,) * (4 - mask.dim()) + tuple(mask.shape)).expand(*q.shape[:3], k.shape[2])
    except RuntimeError:
        return None


def grad_of(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def attention_key(q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale) -> tuple:
    autocast = torch.is_autocast_enabled("cpu")
    dtype = str(torch.get_autocast_dtype("cpu") if autocast else q.dtype).removeprefix("torch.")
    masked = "causal" if is_causal else "none" if mask is None else "bool" if mask.dtype == torch.bool else "additive"
    batch_heads = rows_class(q.shape[0] * q.shape[1])
    grad = grad_of(q, k)
    return (
        "attention",
        dtype + (" autocast" if autocast else ""),
        batch_heads,
        rows_class(q.shape[2]),
        rows_class(k.shape[2]),
        q.shape[3],
        masked,
        dropout_p > 0,
        "grad" if grad else "no-grad",
        torch.get_num_threads(),
    )


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


def written_out(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """Two products around a softmax (Vaswani §3.2.1, eq. 1), the scores held in memory."""
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


def native_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """triform's own kernels: the decoding one for a query, the one over many queries for more, each
    where it applies (the fused kernel elsewhere)."""
    if q.shape[2] == 1:
        return native_single_query(q, k, v, mask, is_causal, dropout_p, scale)
    prepared = None if mask is None else native_mask(mask, q, k)  # the mask checked and laid out once
    if not many_queries_native(q, k, v, None, dropout_p) or (mask is not None and prepared is None):
        return textbook.attend(q, k, v, mask, is_causal, dropout_p, scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return NativeAttention.apply(q, k, v, prepared, is_causal, scale, dropout_p)


class NativeAttention(torch.autograd.Function):
    """dropout(softmax(q · kᵀ · scale + mask)) · v by `native.attention_forward`, its backward by
    `attention_backward`: what is kept between them is q, k, v, the mask, the result, a log-sum-exp per
    query and the dropout's seed, from which the backward pass draws the same keep decisions again."""

    @staticmethod
    def forward(
        ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, scale: float, dropout_p: float = 0.0
    ) -> Tensor:
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        dropout = native_draw(dropout_p) if dropout_p > 0 else None
        out, lse = native.library().attention_forward(q, k, v, mask, causal, scale, dropout)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.causal, ctx.scale, ctx.dropout = causal, scale, dropout
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, mask, out, lse = ctx.saved_tensors
        grad = grad if grad.stride(-1) == 1 else grad.contiguous()
        kernels = native.library()
        dq, dk, dv = kernels.attention_backward(q, k, v, mask, out, lse, grad, ctx.causal, ctx.scale, ctx.dropout)
        return dq, dk, dv, None, None, None, None


def native_single_query(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float, scale: float | None
) -> Tensor:
    """triform's decoding attention (`kernels/native.py`): one query over the whole cache."""
    if dropout_p > 0 or (is_causal and k.shape[2] > 1) or v.dtype != k.dtype:  # the fused kernel's meaning
        return textbook.attend(q, k, v, mask, is_causal, dropout_p, scale)
    if mask is not None and mask.dim() < 4:
        mask = mask.view((1,) * (4 - mask.dim()) + tuple(mask.shape))
    return native.library().decode_attention(q, k, v, mask, scale)


KERNELS = {"sdpa": textbook.attend, "written-out": written_out, "fp32": single_query_fp32, "native": native_attention}
