"""Attention patterns: who may attend to whom, decided per batch by the objective.

A pattern is one of three names, combined with a padding mask:

- ``bidirectional``: every token sees every real token (BERT, an encoder).
- ``causal``: a token sees itself and the tokens before it (GPT, a decoder).
- ``prefix``: bidirectional among the first ``prefix_lengths[b]`` slots of example ``b``, causal
  after them (UniLM, Dong et al. 2019; the prefix LM of Raffel et al. 2020, §3.2.1).

Slots are positions in the key sequence, padding included. When a KV cache holds earlier keys, the
queries are the last ``n_queries`` of the ``n_keys`` slots.
"""

from __future__ import annotations

import torch
from torch import Tensor

PATTERNS = ("bidirectional", "causal", "prefix")


def visibility(
    pattern: str,
    n_queries: int,
    n_keys: int,
    *,
    padding_mask: Tensor | None = None,
    prefix_lengths: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """Boolean mask of shape (B or 1, 1, n_queries, n_keys), True where a query may attend a key.

    Returns None when every query may see every key (bidirectional, no padding), so that attention
    can skip masking altogether. `padding_mask` is (B, n_keys), True at real tokens.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"attention pattern must be one of {PATTERNS}, got {pattern!r}")
    if pattern == "prefix" and prefix_lengths is None:
        raise ValueError("the prefix pattern needs prefix_lengths, one per example")
    if padding_mask is not None:
        device = padding_mask.device
    offset = n_keys - n_queries
    query_slots = torch.arange(offset, n_keys, device=device)[:, None]  # (Tq, 1)
    key_slots = torch.arange(n_keys, device=device)[None, :]  # (1, Tk)

    allowed: Tensor | None = None
    if pattern == "causal":
        allowed = (key_slots <= query_slots)[None, None]  # (1, 1, Tq, Tk)
    elif pattern == "prefix":
        prefix_end = prefix_lengths.to(device)[:, None, None, None]  # (B, 1, 1, 1)
        allowed = (key_slots <= query_slots)[None, None] | (key_slots < prefix_end)
    if padding_mask is not None:
        real_keys = padding_mask[:, None, None, :].bool()  # (B, 1, 1, Tk)
        allowed = real_keys if allowed is None else allowed & real_keys
        # A padding query may have nothing to see (left padding under a causal pattern); letting
        # every query see its own slot keeps softmax finite, and real queries never see padding.
        allowed = allowed | (key_slots == query_slots)[None, None]
    return allowed


def is_plain_causal(pattern: str, n_queries: int, n_keys: int, padding_mask: Tensor | None) -> bool:
    """True when the mask is exactly lower-triangular, so the fused causal kernel can be used."""
    return pattern == "causal" and padding_mask is None and n_queries == n_keys


def positions_from_padding(padding_mask: Tensor, n_queries: int) -> Tensor:
    """Position ids of the last `n_queries` slots: real tokens count from 0 whatever the padding side."""
    positions = padding_mask.long().cumsum(-1) - 1  # (B, Tk)
    return positions[:, -n_queries:].clamp(min=0)
