"""Output heads: from hidden states to scores over the vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.kernels import Linear
from triform.kernels.linear import linear as measured_linear


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
        projection = self.projection
        if self.bias is not None and torch.is_grad_enabled() and type(projection) in (Linear, nn.Linear):
            # Training: the bias inside the product, as a linear layer's own (oneDNN adds it as the
            # product's rows are written; its gradient is the rows' sum either way). An addition after
            # it wrote a second tokens x vocabulary tensor into fresh memory: a step of the benchmark's
            # BERT took 1.042 s that way against 1.006 in fp32, 0.665 against 0.657 in bf16 (steps
            # alternating in one process, AMD EPYC Zen 5, 2 threads).
            if type(projection) is Linear:
                return measured_linear(hidden, projection.weight, self.bias, projection.gradient_in_rows)
            return F.linear(hidden, projection.weight, self.bias)
        logits = projection(hidden)
        if self.bias is None:
            return logits
        # In the logits' dtype, as a linear layer's own bias is under autocast: an fp32 bias added to
        # bf16 logits would make them fp32, a copy of tokens x vocabulary written and read again.
        return logits + self.bias.to(logits.dtype)
