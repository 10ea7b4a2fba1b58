"""Dropout (Srivastava et al. 2014): zero each element with probability p, scale the rest by 1 / (1 - p).

On a CPU the keep decisions come from 15-bit random integers, four per 64-bit draw of torch's
generator, rather than from `bernoulli_`, which draws a float per element and made dropout twice as
slow on the AMD EPYC this was measured on. p is rounded to a multiple of 1/32768 (0.1 becomes 0.100006)
and the scale uses the rounded value, so that the output's expectation is exactly the input. In
evaluation mode, or at p = 0, the input is returned as it is. `Dropout` computes what `nn.Dropout`
computes, with other random draws.

Two kernels draw them, chosen by calibration (`kernels/calibrate.py`) for each class of size, dtype
and autograd: `torch`, as above, and `native` (contiguous fp32 or bf16 on a CPU where triform's
kernels are built: native/dropout.c), whose 15 bits per element come from a hash of the element's
index and a seed drawn from torch's generator, the result and a byte of mask written in one pass and
the mask, not a float copy of it, kept for the backward pass. Both repeat under torch.manual_seed.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from triform.kernels import native
from triform.kernels.calibrate import FIELDS, calibration, rows_class, with_backward

LEVELS = 2**15
FIELDS["dropout"] = ("dtype", "elements≤", "grad", "threads")


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """A boolean mask, True with probability 1 - p (p rounded to 1/32768), and that probability."""
    n = shape.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()  # 63 random bits each
    values = draws.view(torch.int16)[:n] & (LEVELS - 1)  # uniform over [0, 32767]
    dropped = round(p * LEVELS)
    return (values >= dropped).view(shape), 1.0 - dropped / LEVELS


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":  # other devices have fast fused kernels of their own
        return nn.functional.dropout(x, p, training)
    if not native_applies(x):
        return by_torch(x, p)
    grad = "grad" if torch.is_grad_enabled() and x.requires_grad else "no-grad"
    key = ("dropout", str(x.dtype).removeprefix("torch."), rows_class(x.numel()), grad, torch.get_num_threads())
    runs = partial(with_backward, lambda name, xs: KERNELS[name](*xs, p), tuple(KERNELS), (x,), grad == "grad")
    name = calibration().choose(key, tuple(KERNELS), runs)
    return KERNELS[name](x, p)


def native_applies(x: Tensor) -> bool:
    return (
        x.dtype in native.GEMV_DTYPES
        and x.is_contiguous()
        and x.numel() > 0
        and not torch.compiler.is_compiling()
        and native.library() is not None
    )


def by_torch(x: Tensor, p: float) -> Tensor:
    keep, kept = keep_mask(x.shape, p, x.device)
    return x * keep.to(x.dtype).mul_(1.0 / kept)


def natively(x: Tensor, p: float) -> Tensor:
    return _NativeDropout.apply(x, p)


def native_draw(p: float) -> tuple[int, float, int]:
    """(dropped of 2¹⁵, the kept values' scale, seed) of one call of triform's native dropout, here or
    on the attention's probabilities (kernels/attention.py): p rounded as `keep_mask` rounds it, the
    seed drawn from torch's generator, so that torch.manual_seed repeats it."""
    dropped = round(p * LEVELS)
    seed = int(torch.empty((), dtype=torch.int64).random_()) % 2**64  # as the kernels take it: unsigned
    return dropped, 1.0 / (1.0 - dropped / LEVELS), seed


class _NativeDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        dropped, scale, seed = native_draw(p)
        y, keep = native.library().dropout(x, dropped, scale, seed)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return native.library().dropout_backward(grad.contiguous(), keep, ctx.scale), None


KERNELS = {"torch": by_torch, "native": natively}


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
