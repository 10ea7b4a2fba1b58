"""A pretrained body, unchanged, with a task head that reads its final hidden states.

The body is any triform model: a stack read bidirectionally or causally, or an encoder-decoder
fed the same text on both sides (see `framing.py`). `config` is the body's, so that a TaskModel is
saved and loaded as a model folder like any other, with the task described in its "extra" field.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from triform.models.stack import StackInputs
from triform.tasks.framing import Framing


def body_states(
    body: nn.Module, framing: Framing, ids: Tensor, padding_mask: Tensor | None, token_types: Tensor | None = None
) -> Tensor:
    """A body's final hidden states (N, T, d_model) for framed inputs: a stack's, read under the
    framing's pattern, or an encoder-decoder's decoder fed the same text as its encoder (BART §3)."""
    if framing.arch == "encoder-decoder":
        return body.hidden_states(ids, StackInputs(ids, "causal", padding_mask), padding_mask)
    if not body.config.token_types:
        token_types = None  # a body without segment embeddings ignores them
    return body.hidden_states(StackInputs(ids, framing.pattern, padding_mask=padding_mask, token_types=token_types))


class TaskModel(nn.Module):
    def __init__(self, body: nn.Module, head: nn.Module, framing: Framing):
        super().__init__()
        if body.arch != framing.arch:
            raise ValueError(f"the framing is for an {framing.arch} body, the body is a {body.arch}")
        self.body = body
        self.head = head
        self.framing = framing
        self.config = body.config

    def states(self, ids: Tensor, padding_mask: Tensor | None = None, token_types: Tensor | None = None) -> Tensor:
        """Final hidden states (N, T, d_model), position t describing input token t."""
        return body_states(self.body, self.framing, ids, padding_mask, token_types)

    def pool(self, states: Tensor, padding_mask: Tensor | None) -> Tensor:
        """(N, T, d_model) -> (N, d_model): the first token, or the last real one (inputs are right-padded)."""
        if self.framing.pools_first:
            return states[:, 0]
        if padding_mask is None:
            return states[:, -1]
        last = padding_mask.long().sum(-1) - 1  # (N,)
        return states[torch.arange(states.shape[0], device=states.device), last]

    def forward(
        self,
        ids: Tensor,
        padding_mask: Tensor | None = None,
        token_types: Tensor | None = None,
        combine: int = 1,
        lm: dict | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Head scores: (N / combine, n_outputs) for a pooled head, whose summaries of each `combine`
        consecutive rows are summed first (GPT-1 §3.3 adds the two orders of a pair); (N, T,
        n_outputs) for a token head. With `lm`, the inputs of an auxiliary language-model batch,
        also the body's vocabulary logits for it: (scores, lm_logits), in one forward call, as a
        DistributedDataParallel model needs."""
        states = self.states(ids, padding_mask, token_types)
        if not self.head.pooled:
            scores = self.head(states)
        else:
            pooled = self.pool(states, padding_mask)  # (N, d_model)
            if combine > 1:
                pooled = pooled.view(-1, combine, pooled.shape[-1]).sum(1)  # (N / combine, d_model)
            scores = self.head(pooled)
        return scores if lm is None else (scores, self.body(**lm))
