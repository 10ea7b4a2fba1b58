"""A feed-forward's activation by the kernel measured fastest here for each shape class
(`kernels/calibrate.py`): torch's (`torch`) or triform's own (`native`, native/activation.c: one
exponential a value, no libm call, fp32 or bf16 on a CPU where the kernels are built), forward and,
with autograd, backward. On an AMD EPYC (Zen 5, 2 threads) torch's GELU (tanh) took 4 ms forward and
4.5 ms backward for 4,096 rows of 1,536 in fp32, a third of the time that layer's products took.

`ACTIVATIONS` maps each name of `nn.feedforward.ACTIVATIONS` to its measured form, which
models/build.py hands to the feed-forward networks; each computes what the textbook function does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from triform.kernels import native
from triform.kernels.calibrate import FIELDS, calibration, rows_class, with_backward
from triform.nn import feedforward

FIELDS["activation"] = ("kind", "dtype", "rows≤", "n", "grad", "threads")


def activate(kind: str, x: Tensor) -> Tensor:
    """nn.feedforward.ACTIVATIONS[kind](x) by the kernel chosen for x's class."""
    rows = native_rows(x)
    if rows is None:
        return feedforward.ACTIVATIONS[kind](x)
    grad = torch.is_grad_enabled() and x.requires_grad
    dtype = str(x.dtype).removeprefix("torch.")
    key = ("activation", kind, dtype, rows_class(rows.shape[0]), rows.shape[1], "grad" if grad else "no-grad")
    key += (torch.get_num_threads(),)
    names = ("torch", "native")
    name = calibration().choose(
        key, names, lambda: with_backward(lambda n, xs: KERNELS[n](kind, *xs), names, (x,), grad)
    )
    return KERNELS[name](kind, x)


def native_rows(x: Tensor) -> Tensor | None:
    """x as (rows, n) rows of one stride, the last dimension contiguous, where the native kernel can
    take it: fp32 or bf16 on a CPU, outside torch.compile, the kernels built; else None."""
    if x.device.type != "cpu" or x.dtype not in native.GEMV_DTYPES or x.numel() == 0 or x.stride(-1) != 1:
        return None
    if torch.compiler.is_compiling() or native.library() is None:
        return None
    try:
        return x.view(-1, x.shape[-1])  # a split's half (a gated network's gate) too: rows of its stride
    except RuntimeError:
        return None


def by_torch(kind: str, x: Tensor) -> Tensor:
    return feedforward.ACTIVATIONS[kind](x)


def natively(kind: str, x: Tensor) -> Tensor:
    return _NativeActivation.apply(x, kind)


class _NativeActivation(torch.autograd.Function):
    """y = act(x) by native/activation.c, and its backward pass g · act'(x); x is what is kept."""

    @staticmethod
    def forward(ctx, x: Tensor, kind: str) -> Tensor:
        ctx.save_for_backward(x)
        ctx.kind = kind
        return native.library().activation_forward(kind, native_rows(x)).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        rows = native_rows(x)
        gradient = native.library().activation_backward(ctx.kind, rows, grad.contiguous().view(rows.shape))
        return gradient.view(x.shape), None


class Measured:
    """`activate(kind, ·)`, one object per kind, which copies of a model share (as they share torch's
    functions): the fused decoding step knows an activation by its identity."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, x: Tensor) -> Tensor:
        return activate(self.kind, x)

    def __copy__(self) -> Measured:
        return self

    def __deepcopy__(self, memo: dict) -> Measured:
        return self

    def __reduce__(self):
        return measured, (self.kind,)

    def __repr__(self) -> str:
        return f"measured {self.kind}"


def measured(kind: str) -> Measured:
    return ACTIVATIONS[kind]


KERNELS = {"torch": by_torch, "native": natively}
ACTIVATIONS: dict[str, Measured] = {kind: Measured(kind) for kind in feedforward.ACTIVATIONS}
