"""y = x · Wᵀ + b, with the matrix-product kernel chosen for the CPU.

torch computes fp32 matrix products on x86 CPUs with MKL, and bf16 ones with oneDNN. Measured on the
AMD EPYC that benchmarks/run.py was developed on (torch 2.13):
- oneDNN's fp32 kernels ran the products of a training step 1.3 to 2.4 times faster than MKL's at
  the same shapes (MKL picks its code path by CPU vendor; oneDNN by instruction set);
- a single row under bf16 autocast (a decoding step at batch 1) goes to oneDNN's bf16 kernel, built
  for matrices, which costs 25 to 35 µs a call however small the product. Below ONEDNN_MIN_PRODUCT
  the row is computed outside autocast, in fp32 against the fp32 weight, by MKL's matrix-vector
  kernel: 17 µs against 34 for 64 -> 192 features, and greedy decoding of the tiny presets at batch 1
  a quarter faster. Larger rows stay with oneDNN, which reads half the bytes. torch's own bf16
  matrix-vector kernel was faster still (at d_model 384, decoding 1.6 times faster), but every aten
  product (mm, mv, dot, bmm) reaches it only with oneDNN switched off for the whole process, a
  flag that other threads would see; no per-call way to it exists, so it is not used.
`Linear` is `nn.Linear` with those choices made: the same parameters, the same state dict, the
same results to within rounding. `choose_product` makes the choice, in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# A oneDNN call costs some 10 µs before any arithmetic, more than a whole small product takes in
# MKL. From about 2^18 multiply-adds up oneDNN wins, by far when the weights stream from memory as in
# decoding (benchmarks/run.py's GPT at batch 1: 2.3 ms per token against 3.5 with MKL); below, MKL's
# lower cost per call keeps the per-step time of small models (benchmarks/generation.py) as it was.
ONEDNN_MIN_PRODUCT = 2**18
# torch itself leaves bf16 products of at most 16³ multiply-adds to its own kernel (mkldnn_gemm in
# aten/src/ATen/native/mkldnn/Matmul.cpp), which is faster there than fp32.
ONEDNN_MIN_BF16 = 16**3

Product = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def onednn_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (M, K) · weight (N, K)ᵀ + bias, by oneDNN; any strides."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = onednn_product(grad, weight.t(), None) if ctx.needs_input_grad[0] else None  # grad · W
        grad_weight = onednn_product(grad.t(), x.t(), None) if ctx.needs_input_grad[1] else None  # gradᵀ · x
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear by oneDNN, forward and backward."""
    rows = x.reshape(-1, x.shape[-1])  # (M, in)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    y = _OneDnnLinear.apply(rows, weight, bias) if needs_grad else onednn_product(rows, weight, bias)
    return y.view(*x.shape[:-1], weight.shape[0])  # (..., out)


def use_onednn(x: Tensor, weight: Tensor) -> bool:
    """fp32 on a CPU, a product of at least ONEDNN_MIN_PRODUCT multiply-adds, oneDNN present and
    enabled, outside autocast (whose bf16 products are oneDNN's already) and outside torch.compile
    (which makes its own choice)."""
    return (
        ONEDNN
        and x.numel() * weight.shape[0] >= ONEDNN_MIN_PRODUCT
        and x.dtype == weight.dtype == torch.float32
        and x.device.type == "cpu"
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def small_bf16_row(x: Tensor, weight: Tensor) -> bool:
    """A single row under CPU bf16 autocast whose product oneDNN would compute (more than 16³
    multiply-adds, oneDNN enabled) but slower than MKL in fp32 (fewer than ONEDNN_MIN_PRODUCT), with
    an fp32 weight, outside torch.compile."""
    return (
        x.numel() == x.shape[-1]
        and ONEDNN_MIN_BF16 < x.numel() * weight.shape[0] < ONEDNN_MIN_PRODUCT
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and torch.backends.mkldnn.enabled
        and not torch.compiler.is_compiling()
    )


def fp32_row(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear outside autocast, in fp32, its result in bf16 as autocast's would be."""
    with torch.autocast("cpu", enabled=False):
        return F.linear(x.float(), weight, bias).to(torch.bfloat16)


def choose_product(x: Tensor, weight: Tensor) -> Product:
    """The kernel that computes x · weightᵀ + bias fastest here."""
    if small_bf16_row(x, weight):
        return fp32_row
    if use_onednn(x, weight):
        return onednn_linear
    return F.linear


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return choose_product(x, weight)(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear, its product computed by the kernel `choose_product` picks."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
