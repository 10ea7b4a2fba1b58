"""Normalisation layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019, used by T5)."""

from __future__ import annotations

from torch import nn


def make_norm(kind: str, d_model: int, eps: float) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps)
    if kind == "rmsnorm":
        # T5's "LayerNorm" is this: scale only, no mean subtraction and no bias.
        return nn.RMSNorm(d_model, eps=eps)
    raise ValueError(f"unknown norm {kind!r}")
