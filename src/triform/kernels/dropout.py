"""Dropout (Srivastava et al. 2014): zero each element with probability p, scale the rest by 1 / (1 - p).

On a CPU the keep decisions come from 15-bit random integers, four per 64-bit draw of torch's
generator, rather than from `bernoulli_`, which draws a float per element and made dropout twice as
slow on the AMD EPYC this was measured on. p is rounded to a multiple of 1/32768 (0.1 becomes 0.100006)
and the scale uses the rounded value, so that the output's expectation is exactly the input. In
evaluation mode, or at p = 0, the input is returned as it is. `Dropout` computes what `nn.Dropout`
computes, with other random draws.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LEVELS = 2**15


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
    keep, kept = keep_mask(x.shape, p, x.device)
    return x * keep.to(x.dtype).mul_(1.0 / kept)


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
