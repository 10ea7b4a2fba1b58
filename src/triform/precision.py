"""Numeric precision: bf16 autocast where the hardware computes in bf16 natively, fp32 elsewhere.

Autocast (Micikevicius et al. 2018, with bf16 instead of fp16 so that no loss scaling is needed)
keeps the weights and the residual stream in fp32 and runs matrix products in bf16; the same
choice serves training, evaluation and generation, and `fp32` or `bf16` overrides it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS = ("auto", "bf16", "fp32")


def native_bf16(device: torch.device) -> bool:
    """CUDA GPUs that support bf16; CPUs with AVX512-BF16 or AMX (others emulate it slowly)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting: bf16, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if native_bf16(device) else None


def autocast(precision: str, device: torch.device):
    """A context that runs its block at `precision` on `device`."""
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def resolved_name(precision: str, device: torch.device) -> str:
    """ "bf16" or "fp32": what `precision` means on `device`."""
    return "bf16" if autocast_dtype(precision, device) is not None else "fp32"


def described(precision: str, device: torch.device) -> str:
    """`resolved_name`, saying so where bf16 was asked for on a device that only emulates it (a CPU
    with AVX2 alone ran bf16 products 6 times slower than fp32)."""
    name = resolved_name(precision, device)
    if name == "bf16" and not native_bf16(device):
        return "bf16 (emulated on this device: slower than fp32)"
    return name
