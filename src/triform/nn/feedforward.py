"""Position-wise feed-forward networks (Vaswani et al. 2017, §3.3) and their gated variants.

The projections are `nn.Linear` unless another is handed in (`linear=`, as models/build.py does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact erf form, as BERT and BART use
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's and T5 v1.1's approximation
    "silu": F.silu,
}


class FeedForward(nn.Module):
    """x -> W_out · activation(W_in · x)."""

    def __init__(
        self, d_model: int, d_ff: int, activation: str, bias: bool, *, linear: Callable[..., nn.Linear] = nn.Linear
    ):
        super().__init__()
        self.up = linear(d_model, d_ff, bias=bias)
        self.down = linear(d_ff, d_model, bias=bias)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.up(x)))


class GatedFeedForward(nn.Module):
    """x -> W_out · (activation(W_gate · x) ⊙ W_up · x): SwiGLU with silu, GEGLU with gelu (Shazeer 2020)."""

    def __init__(
        self, d_model: int, d_ff: int, activation: str, bias: bool, *, linear: Callable[..., nn.Linear] = nn.Linear
    ):
        super().__init__()
        self.gate = linear(d_model, d_ff, bias=bias)
        self.up = linear(d_model, d_ff, bias=bias)
        self.down = linear(d_ff, d_model, bias=bias)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.gate(x)) * self.up(x))
