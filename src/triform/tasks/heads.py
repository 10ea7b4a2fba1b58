"""Task heads: small modules that read a pretrained body's final hidden states.

`PooledHead` scores a whole sequence from one summary vector (classification, regression, one
candidate of a multiple choice); `TokenHead` scores every token (tagging; start / end of an answer).
"""

from __future__ import annotations

from torch import Tensor, nn


class PooledHead(nn.Module):
    """dense + tanh over the summary vector, then a projection to the outputs: BERT's pooler and
    classifier (Devlin et al. 2019 §3), and BART's classification head, in one."""

    pooled = True

    def __init__(self, d_model: int, n_outputs: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, n_outputs)
        initialise_linear(self)

    def forward(self, pooled: Tensor) -> Tensor:
        hidden = self.dense(self.dropout(pooled)).tanh()  # (N, d_model)
        return self.out(self.dropout(hidden))  # (N, n_outputs)


class TokenHead(nn.Module):
    """A projection of every token's hidden state: per-tag scores, or the start and end scores of
    extractive question answering (Devlin et al. 2019 §4.2-4.3)."""

    pooled = False

    def __init__(self, d_model: int, n_outputs: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, n_outputs)
        initialise_linear(self)

    def forward(self, states: Tensor) -> Tensor:
        return self.out(self.dropout(states))  # (N, T, n_outputs)


def initialise_linear(module: nn.Module) -> None:
    """Normal(0, 0.02) weights and zero biases, as the bodies are initialised (BERT, GPT-2)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
