"""Position-wise feed-forward networks (Vaswani et al. 2017, §3.3) and their gated variants.

The projections are `nn.Linear` and the activation the textbook function named unless others are
handed in (`linear=`, `activation_of=`, as models/build.py does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact erf form, as BERT and BART use
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's and T5 v1.1's approximation
    "silu": F.silu,
}
Activation = Callable[[Tensor], Tensor]


class FeedForward(nn.Module):
    """x -> W_out · activation(W_in · x)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str,
        bias: bool,
        *,
        linear: Callable[..., nn.Linear] = nn.Linear,
        activation_of: Callable[[str], Activation] = ACTIVATIONS.__getitem__,
    ):
        super().__init__()
        self.up = linear(d_model, d_ff, bias=bias)
        self.down = linear(d_ff, d_model, bias=bias)
        self.activation = activation_of(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.up(x)))


class GatedFeedForward(nn.Module):
    """x -> W_out · (activation(W_gate · x) ⊙ W_up · x): SwiGLU with silu, GEGLU with gelu (Shazeer 2020).

    W_gate and W_up are one matrix, `gate_up` (2 · d_ff rows, the gate's first): one product instead
    of two, as query_key_value is for attention. Model folders and state dicts written before, with
    separate `gate` and `up` tensors, still load (`join_gate_up`)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str,
        bias: bool,
        *,
        linear: Callable[..., nn.Linear] = nn.Linear,
        activation_of: Callable[[str], Activation] = ACTIVATIONS.__getitem__,
    ):
        super().__init__()
        self.d_ff = d_ff
        self.gate_up = linear(d_model, 2 * d_ff, bias=bias)
        self.down = linear(d_ff, d_model, bias=bias)
        self.activation = activation_of(activation)
        self._register_load_state_dict_pre_hook(self._join_old_layout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).split(self.d_ff, dim=-1)  # (..., d_ff) each
        return self.down(self.activation(gate) * up)

    @staticmethod
    def _join_old_layout(state: dict, prefix: str, *args) -> None:
        joined = join_gate_up(state, prefix)
        for name in set(state) - set(joined):
            del state[name]
        state.update(joined)


def join_gate_up(tensors: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """The tensors with every old-layout pair `PREFIX...gate.weight` / `...up.weight` (and biases) of
    a gated feed-forward joined into one `...gate_up` tensor, the gate's rows first."""
    joined = dict(tensors)
    for kind in ("weight", "bias"):
        for name in [n for n in tensors if n.startswith(prefix) and n.endswith(f"gate.{kind}")]:
            stem = name[: -len(f"gate.{kind}")]  # "" or ending in "."
            if (stem == "" or stem.endswith(".")) and f"{stem}up.{kind}" in joined:
                joined[f"{stem}gate_up.{kind}"] = torch.cat([joined.pop(name), joined.pop(f"{stem}up.{kind}")])
    return joined
