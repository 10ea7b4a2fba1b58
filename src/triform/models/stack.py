"""A stack: embeddings, N blocks, a final norm. The same class is an encoder and a decoder.

Whether it behaves as an encoder (bidirectional) or a decoder (causal) is decided by the `pattern`
of each forward pass's inputs, as in x-transformers' Encoder/Decoder, but without a class per
pattern. A stack built with cross-attention in its blocks reads an encoder's output through `memory`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from triform.nn.block import AttentionContext, Block
from triform.nn.masks import cross_visibility, document_positions, is_plain_causal, positions_from_padding, visibility
from triform.nn.position import LearnedPositions, RelativePositionBias, SinusoidalPositions

if TYPE_CHECKING:
    from triform.nn.cache import KVCache


@dataclass(frozen=True)
class StackInputs:
    """What one forward pass of a stack reads: the tokens, and who sees whom (nn/masks.py)."""

    ids: Tensor  # (B, T)
    pattern: str = "causal"  # bidirectional, causal or prefix
    padding_mask: Tensor | None = None  # (B, T_cached + T), True at real tokens, covering cached slots
    prefix_lengths: Tensor | None = None  # (B,), for the prefix pattern; (B, D) with documents
    token_types: Tensor | None = None  # (B, T) segment ids
    positions: Tensor | None = None  # (B, T); None: counted over real tokens, after the cached ones
    documents: Tensor | None = None  # (B, T_cached + T) document of each slot: the pattern within each


class Embeddings(nn.Module):
    """Token (+ absolute position) (+ segment) embeddings, optionally scaled and normalised."""

    def __init__(
        self,
        token: nn.Embedding,
        position: nn.Module | None,
        token_types: nn.Embedding | None,
        *,
        scale: float,
        norm: nn.Module | None,
        dropout: nn.Module,
    ):
        super().__init__()
        self.token = token
        self.position = position
        self.token_types = token_types
        self.scale = scale
        self.norm = norm
        self.dropout = dropout  # on the sum of embeddings and positions, Vaswani §5.4

    def forward(self, ids: Tensor, positions: Tensor, token_types: Tensor | None = None) -> Tensor:
        x = self.token(ids)
        if self.scale != 1.0:
            x = x * self.scale
        if self.position is not None:
            x = x + self.position(positions)
        if self.token_types is not None:
            x = x + self.token_types(token_types if token_types is not None else torch.zeros_like(ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)  # (B, T, d_model)

    def step_parts(self) -> tuple[Tensor, Tensor | None, float, nn.Module | None] | None:
        """What `forward` computes, for a decoding step in one native call (kernels/fused_step.py): the
        token table, the position table whose row at each position is added (None: no positions here),
        the scale and the norm; None where the embeddings are more than that (segments, dropout that
        runs, positions of another kind)."""
        if self.token_types is not None or type(self.token) is not nn.Embedding or self.token.max_norm is not None:
            return None
        if self.training and getattr(self.dropout, "p", 1.0) > 0:
            return None
        if self.position is None:
            table = None
        elif type(self.position) is LearnedPositions and type(self.position.embedding) is nn.Embedding:
            table = self.position.embedding.weight
        elif type(self.position) is SinusoidalPositions:
            table = self.position.table
        else:
            return None
        return self.token.weight, table, self.scale, self.norm


class Stack(nn.Module):
    def __init__(
        self,
        embeddings: Embeddings,
        blocks: list[Block],
        final_norm: nn.Module | None,
        relative_bias: RelativePositionBias | None = None,
        *,
        stack_step: Callable[..., Tensor | None] | None = None,
    ):
        super().__init__()
        self.embeddings = embeddings
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final_norm
        self.relative_bias = relative_bias  # shared by all layers, as in T5
        # Activation checkpointing (Chen et al. 2016): keep only each block's input while training and
        # compute the block again in the backward pass; set by `checkpoint_activations`.
        self.checkpointing = False
        # A decoding step of the whole stack computed at once (models/build.py hands in
        # triform.kernels.stack_step); it answers None where the modules are to run.
        self.stack_step = stack_step

    def forward(
        self,
        inputs: StackInputs,
        *,
        memory: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        memory_documents: Tensor | None = None,
        cache: KVCache | None = None,
        embed: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None = None,
    ) -> Tensor:
        """Hidden states (B, T, d_model) of the input tokens; `memory` (B, S, d_model), the encoder's
        output, for a stack with cross-attention, with `memory_padding_mask` (B, S), True at real
        source tokens, and `memory_documents` (B, S), the document of each source token: a token of
        document d reads only document d of the source (packed source -> target rows). `embed(ids,
        positions, token_types)` embeds the tokens in place of the stack's own embeddings, for a stack
        that reads another's (ELECTRA's generator reads its discriminator's, objectives/electra.py)."""
        length = inputs.ids.shape[1]
        n_keys = (cache.length if cache is not None else 0) + length
        if inputs.padding_mask is not None and inputs.padding_mask.shape[-1] != n_keys:
            raise ValueError(
                f"padding_mask covers {inputs.padding_mask.shape[-1]} slots; expected {n_keys} (cache + input)"
            )
        positions = self.positions(inputs, n_keys)
        mask, is_causal, bias = self.visibility(inputs, n_keys)
        memory_mask = None
        # Also without `memory`: a decoding step may read the cross-attention keys from the cache alone.
        if memory is not None or memory_padding_mask is not None or memory_documents is not None:
            memory_mask = cross_visibility(length, memory_padding_mask, inputs.documents, memory_documents)
        context = AttentionContext(
            mask=mask, is_causal=is_causal, bias=bias, positions=positions, memory=memory, memory_mask=memory_mask
        )

        if cache is not None and self.stack_step is not None and embed is None and inputs.token_types is None:
            parts = self.embeddings.step_parts()
            hidden = self.stack_step(self.blocks, inputs.ids, positions, context, cache, parts, self.final_norm)
            if hidden is not None:
                cache.advance(length)
                return hidden
        x = (embed or self.embeddings)(inputs.ids, positions, inputs.token_types)
        recompute = self.checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for index, block in enumerate(self.blocks):
            if recompute:  # non-reentrant: the RNG state is replayed, so dropout draws the same masks
                x = checkpoint(block, x, context, use_reentrant=False)
            else:
                x = block(x, context, cache[index] if cache is not None else None)
        if cache is not None:
            cache.advance(length)
        return self.final_norm(x) if self.final_norm is not None else x

    @staticmethod
    def positions(inputs: StackInputs, n_keys: int) -> Tensor:
        """(B, T): as given, else counted from each document's start, else over real tokens, else the
        slots after the cached ones."""
        if inputs.positions is not None:
            return inputs.positions
        batch, length = inputs.ids.shape
        if inputs.documents is not None:
            return document_positions(inputs.documents, inputs.padding_mask)[:, -length:]
        if inputs.padding_mask is not None:
            return positions_from_padding(inputs.padding_mask, length)
        return torch.arange(n_keys - length, n_keys, device=inputs.ids.device).expand(batch, length)

    def visibility(self, inputs: StackInputs, n_keys: int) -> tuple[Tensor | None, bool, Tensor | None]:
        """Who sees whom, once for every layer: the mask (None where nothing needs masking), whether
        it is plainly causal (the fused kernel's own causal mask may be used), the relative bias."""
        length, pattern, padding_mask = inputs.ids.shape[1], inputs.pattern, inputs.padding_mask
        bias = self.relative_bias(length, n_keys) if self.relative_bias is not None else None
        plain_causal = is_plain_causal(pattern, length, n_keys, padding_mask, inputs.documents)
        # One query after the cached keys sees them all, under every pattern that looks left.
        sees_everything = (
            pattern in ("causal", "prefix") and length == 1 and padding_mask is None and inputs.documents is None
        )
        mask = None
        if not sees_everything and not (plain_causal and bias is None):
            mask = visibility(
                pattern,
                length,
                n_keys,
                padding_mask=padding_mask,
                prefix_lengths=inputs.prefix_lengths,
                documents=inputs.documents,
                device=inputs.ids.device,
            )
        # A single query that sees everything needs no causal mask (and under torch.compile with
        # dynamic shapes, `plain_causal` is symbolic: the fused kernel takes a plain bool).
        return mask, not sees_everything and plain_causal and mask is None, bias


def checkpoint_activations(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Recompute each block in the backward pass instead of keeping its activations, in every stack of
    `model` (both of an encoder-decoder): memory for one block's activations instead of all of them,
    for about one more forward pass of compute. Returns `model`."""
    for module in model.modules():
        if isinstance(module, Stack):
            module.checkpointing = enabled
    return model
