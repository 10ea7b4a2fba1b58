"""The `encoder-decoder` architecture: a bidirectional encoder stack and a decoder stack that
reads the encoder's output through cross-attention (Vaswani et al. 2017, T5, BART)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from triform.config import ModelConfig
from triform.kernels.int8 import cache_dtype
from triform.models.heads import LanguageModelHead
from triform.models.stack import Stack, StackInputs
from triform.nn.cache import KVCache, cache_for


class EncoderDecoderModel(nn.Module):
    arch = "encoder-decoder"

    def __init__(self, config: ModelConfig, encoder: Stack, decoder: Stack, head: LanguageModelHead):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.head = head

    def encode(
        self, source_ids: Tensor, source_padding_mask: Tensor | None = None, source_documents: Tensor | None = None
    ) -> Tensor:
        """(B, S) source ids -> (B, S, d_model) memory; the encoder always sees the whole source (each
        document of it, when `source_documents` (B, S) packs several)."""
        return self.encoder(StackInputs(source_ids, "bidirectional", source_padding_mask, documents=source_documents))

    def decode(
        self,
        ids: Tensor,
        memory: Tensor,
        *,
        memory_padding_mask: Tensor | None = None,
        pattern: str = "causal",
        padding_mask: Tensor | None = None,
        positions: Tensor | None = None,
        documents: Tensor | None = None,
        memory_documents: Tensor | None = None,
        cache: KVCache | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        """Scores for decoder inputs `ids` (B, T) reading `memory`, the encoder's output (B, S, d_model),
        through the cache when one is given; (N, vocab_size) where the boolean `logits_at` is True.
        With `documents` (B, T) and `memory_documents` (B, S), target document d reads source document d."""
        inputs = StackInputs(ids, pattern, padding_mask, positions=positions, documents=documents)
        hidden = self.decoder(
            inputs,
            memory=memory,
            memory_padding_mask=memory_padding_mask,
            memory_documents=memory_documents,
            cache=cache,
        )
        if logits_at is not None:
            hidden = hidden[logits_at]  # (N, d_model)
        return self.head(hidden)

    def cache_source(self, memory: Tensor, cache: KVCache) -> None:
        """Compute every decoder layer's cross-attention keys and values of `memory` (B, S, d_model) into
        `cache` now, as the first decoding step would: that step is then one like the others, which
        kernels/fused_step.py serves (it leaves a step that still has them to compute to the modules)."""
        for block, layer in zip(self.decoder.blocks, cache.layers):
            block.cross_attention.source_keys_values(memory, layer)

    def forward(
        self,
        source_ids: Tensor,
        ids: Tensor,
        pattern: str = "causal",
        *,
        source_padding_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        source_documents: Tensor | None = None,
        documents: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced scores for decoder inputs `ids` (B, T) given the source (B, S); packed rows
        give the document of each slot on both sides (`source_documents`, `documents`)."""
        memory = self.encode(source_ids, source_padding_mask, source_documents)
        return self.decode(
            ids,
            memory,
            memory_padding_mask=source_padding_mask,
            pattern=pattern,
            padding_mask=padding_mask,
            documents=documents,
            memory_documents=source_documents,
            logits_at=logits_at,
        )

    def hidden_states(
        self, source_ids: Tensor, inputs: StackInputs, source_padding_mask: Tensor | None = None
    ) -> Tensor:
        """The decoder's final hidden states (B, T, d_model) for `inputs` given the source, before the
        output head: what task heads read (BART feeds the same text to both sides, §3)."""
        memory = self.encode(source_ids, source_padding_mask)
        return self.decoder(inputs, memory=memory, memory_padding_mask=source_padding_mask)

    def new_cache(self, batch_size: int, capacity: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        # The token embedding's weight gives the device and dtype (it stays float in an int8 model,
        # whose cache is bf16: kernels/int8.py's `cache_dtype`).
        weight = self.decoder.embeddings.token.weight
        return cache_for(
            self.config, len(self.decoder.blocks), weight, batch_size, capacity, dtype or cache_dtype(self, weight)
        )
