"""Attention patterns: who may attend to whom, decided per batch by the objective.

A pattern is one of three names, combined with a padding mask:

- ``bidirectional``: every token sees every real token (BERT, an encoder).
- ``causal``: a token sees itself and the tokens before it (GPT, a decoder).
- ``prefix``: bidirectional among the first ``prefix_lengths[b]`` slots of example ``b``, causal
  after them (UniLM, Dong et al. 2019; the prefix LM of Raffel et al. 2020, §3.2.1).
- ``right-to-left``: a token sees itself and the tokens after it, the mirror of causal (UniLM's
  right-to-left LM, Dong et al. 2019, §2.2). Nothing decodes under it: it trains cloze objectives.

Each has a document variant, for rows that pack several documents: given ``documents`` (B, n_keys),
the index of the document each slot belongs to (0, 1, 2, ... along a row, each document one run of
slots), a query sees only keys of its own document, under the same pattern. Under ``prefix``,
``prefix_lengths`` is then (B, D): the prefix of each of a row's documents, counted from its start.
Positions restart at each document (`document_positions`), so that a packed row's logits are those
of each document computed alone: nothing leaks across the boundary, as it does when documents are
only separated by [EOS] (GPT-2's packing). Krell et al. 2021 pack BERT's data so, "without
cross-contamination"; Zhao et al. 2024 find intra-document causal masking helps a causal LM.

Slots are positions in the key sequence, padding included. When a KV cache holds earlier keys, the
queries are the last ``n_queries`` of the ``n_keys`` slots.
"""

from __future__ import annotations

import torch
from torch import Tensor

PATTERNS = ("bidirectional", "causal", "prefix", "right-to-left")


def visibility(
    pattern: str,
    n_queries: int,
    n_keys: int,
    *,
    padding_mask: Tensor | None = None,
    prefix_lengths: Tensor | None = None,
    documents: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """Boolean mask of shape (B or 1, 1, n_queries, n_keys), True where a query may attend a key.

    Returns None when every query may see every key (bidirectional, no padding, one document), so
    that attention can skip masking altogether. `padding_mask` is (B, n_keys), True at real tokens;
    `documents` (B, n_keys), the document of each slot (the document variant of the pattern).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"attention pattern must be one of {PATTERNS}, got {pattern!r}")
    if pattern == "prefix" and prefix_lengths is None:
        raise ValueError("the prefix pattern needs prefix_lengths, one per example")
    if documents is not None and documents.shape[-1] != n_keys:
        raise ValueError(f"documents cover {documents.shape[-1]} slots; expected {n_keys}")
    if pattern == "prefix" and (prefix_lengths.dim() == 2) != (documents is not None):
        raise ValueError("prefix_lengths are (B,) for rows of one text, and (B, D), one per document, with documents")
    if padding_mask is not None:
        device = padding_mask.device
    elif documents is not None:
        device = documents.device
    offset = n_keys - n_queries
    query_slots = torch.arange(offset, n_keys, device=device)[:, None]  # (Tq, 1)
    key_slots = torch.arange(n_keys, device=device)[None, :]  # (1, Tk)

    allowed: Tensor | None = None
    if pattern == "causal":
        allowed = (key_slots <= query_slots)[None, None]  # (1, 1, Tq, Tk)
    elif pattern == "right-to-left":
        allowed = (key_slots >= query_slots)[None, None]  # (1, 1, Tq, Tk)
    elif pattern == "prefix" and documents is None:
        prefix_end = prefix_lengths.to(device)[:, None, None, None]  # (B, 1, 1, 1)
        allowed = (key_slots <= query_slots)[None, None] | (key_slots < prefix_end)
    elif pattern == "prefix":
        allowed = (key_slots <= query_slots)[None, None] | in_prefix(documents, prefix_lengths)[:, None, None, :]
    if documents is not None:
        same_document = documents[:, None, offset:, None] == documents[:, None, None, :]  # (B, 1, Tq, Tk)
        allowed = same_document if allowed is None else allowed & same_document
    if padding_mask is not None:
        real_keys = padding_mask[:, None, None, :].bool()  # (B, 1, 1, Tk)
        allowed = real_keys if allowed is None else allowed & real_keys
        # A padding query may have nothing to see (left padding under a causal pattern); letting
        # every query see its own slot keeps softmax finite, and real queries never see padding.
        allowed = allowed | (key_slots == query_slots)[None, None]
    return allowed


def is_plain_causal(
    pattern: str, n_queries: int, n_keys: int, padding_mask: Tensor | None, documents: Tensor | None = None
) -> bool:
    """True when the mask is exactly lower-triangular, so the fused causal kernel can be used."""
    return pattern == "causal" and padding_mask is None and documents is None and n_queries == n_keys


def document_positions(documents: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """(B, T) position of each slot inside its document: real tokens count from 0 at each document's
    first slot, so that a document packed anywhere in a row is placed as if it stood alone."""
    real = torch.ones_like(documents) if padding_mask is None else padding_mask.long()
    counted = real.cumsum(-1)  # real tokens up to and including each slot
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    # Real tokens before the start of each slot's document, carried along the document by cummax.
    before = torch.where(starts, counted - real, torch.zeros_like(counted)).cummax(-1).values
    return (counted - before - 1).clamp(min=0)


def in_prefix(documents: Tensor, prefix_lengths: Tensor) -> Tensor:
    """(B, T) True at the slots inside their document's prefix; `prefix_lengths` (B, D), one per document."""
    own = prefix_lengths.to(documents.device).gather(1, documents.clamp(0, prefix_lengths.shape[1] - 1))
    return document_positions(documents) < own


def positions_from_padding(padding_mask: Tensor, n_queries: int) -> Tensor:
    """Position ids of the last `n_queries` slots: real tokens count from 0 whatever the padding side."""
    positions = padding_mask.long().cumsum(-1) - 1  # (B, Tk)
    return positions[:, -n_queries:].clamp(min=0)


def cross_visibility(
    n_queries: int, memory_padding_mask: Tensor | None, documents: Tensor | None, memory_documents: Tensor | None
) -> Tensor | None:
    """Cross-attention's mask, (B, 1, 1 or n_queries, S): real source tokens, and with documents on
    both sides, only those of the query's own document. None where every query sees every key."""
    allowed = None if memory_padding_mask is None else memory_padding_mask[:, None, None, :].bool()
    if (documents is None) != (memory_documents is None):
        raise ValueError("packed cross-attention needs documents on both sides, the decoder's and the source's")
    if documents is not None:
        same_document = documents[:, None, -n_queries:, None] == memory_documents[:, None, None, :]
        allowed = same_document if allowed is None else allowed & same_document
    return allowed
