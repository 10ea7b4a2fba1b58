"""Output heads: from hidden states to scores over the vocabulary."""

from __future__ import annotations

from torch import Tensor, nn


class LanguageModelHead(nn.Module):
    """Optional transform (BERT's dense + activation + norm), then a projection to the vocabulary.

    The projection's weight is the token embedding when tied (Press & Wolf 2017; Vaswani §3.4).
    """

    def __init__(
        self, projection: nn.Linear, *, transform: nn.Module | None = None, bias: bool = False, scale: float = 1.0
    ):
        super().__init__()
        self.transform = transform
        self.projection = projection
        self.bias = nn.Parameter(projection.weight.new_zeros(projection.out_features)) if bias else None
        self.scale = scale  # T5 rescales before a tied projection: d_model ** -0.5

    def forward(self, hidden: Tensor) -> Tensor:
        if self.transform is not None:
            hidden = self.transform(hidden)
        if self.scale != 1.0:
            hidden = hidden * self.scale
        logits = self.projection(hidden)
        if self.bias is None:
            return logits
        # In the logits' dtype, as a linear layer's own bias is under autocast: an fp32 bias added to
        # bf16 logits would make them fp32, a copy of tokens x vocabulary written and read again
        # (BERT's masked-LM step on the benchmark: 45 ms of 655 in bf16).
        return logits + self.bias.to(logits.dtype)
