"""The `stack` architecture: one stack and an output head (GPT, BERT, UniLM, ...)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from triform.config import ModelConfig
from triform.kernels.int8 import cache_dtype
from triform.models.heads import LanguageModelHead
from triform.models.stack import Stack, StackInputs
from triform.nn.cache import KVCache, cache_for


class StackModel(nn.Module):
    arch = "stack"

    def __init__(self, config: ModelConfig, stack: Stack, head: LanguageModelHead):
        super().__init__()
        self.config = config
        self.stack = stack
        self.head = head

    def forward(
        self,
        ids: Tensor,
        pattern: str = "causal",
        *,
        padding_mask: Tensor | None = None,
        prefix_lengths: Tensor | None = None,
        token_types: Tensor | None = None,
        positions: Tensor | None = None,
        documents: Tensor | None = None,
        cache: KVCache | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        """Scores over the vocabulary: (B, T, vocab_size), or (N, vocab_size) at the N positions where
        the boolean `logits_at` (B, T) is True, so that the output projection, the largest matrix of a
        small model, runs only where there is something to predict (masked LM). `documents` (B, T)
        packs several documents in a row, each attended and placed as if alone (nn/masks.py)."""
        inputs = StackInputs(ids, pattern, padding_mask, prefix_lengths, token_types, positions, documents)
        hidden = self.stack(inputs, cache=cache)
        if logits_at is not None:
            hidden = hidden[logits_at]  # (N, d_model)
        return self.head(hidden)

    def hidden_states(self, inputs: StackInputs, cache: KVCache | None = None) -> Tensor:
        """The stack's final hidden states (B, T, d_model), before the output head: what task heads read."""
        return self.stack(inputs, cache=cache)

    def new_cache(self, batch_size: int, capacity: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        # The token embedding's weight gives the device and dtype (it stays float in an int8 model,
        # whose cache is bf16: kernels/int8.py's `cache_dtype`).
        weight = self.stack.embeddings.token.weight
        return cache_for(
            self.config, len(self.stack.blocks), weight, batch_size, capacity, dtype or cache_dtype(self, weight)
        )
