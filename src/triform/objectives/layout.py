"""How source -> target examples are laid out on each architecture.

Objectives that produce a source and a target (span corruption, denoising, prefix LM, seq2seq) share
these two layouts, so that the same data trains an encoder-decoder or a single stack:

- encoder-decoder: the encoder reads ``source [EOS]``; the decoder reads ``[BOS] target`` and
  predicts ``target [EOS]`` (teacher forcing). A vocabulary with its own decoder start token
  (T5's and Marian's padding, BART's end of sequence) puts that token in place of [BOS].
- stack: one sequence ``source [SEP] target [EOS]``; the source and the separator form the
  prefix, and only the target tokens and the final [EOS] are predicted (UniLM, Dong et al. 2019).
"""

from __future__ import annotations

import torch

from triform.objectives.batch import IGNORE, Batch, pad, pad_targets
from triform.vocab import SpecialTokens

Pair = tuple[list[int], list[int]]


def source_target_batch(pairs: list[Pair], arch: str, pattern: str, specials: SpecialTokens) -> Batch:
    if arch == "encoder-decoder":
        source_ids, source_mask = pad([list(s) + [specials.eos] for s, _ in pairs], specials.pad)
        ids, padding_mask = pad([[specials.decoder_start_id] + list(t) for _, t in pairs], specials.pad)
        targets = pad_targets([list(t) + [specials.eos] for _, t in pairs], ids.shape[1])
        return Batch(ids, targets, pattern, padding_mask, source_ids=source_ids, source_padding_mask=source_mask)

    sequences, target_rows, segments, prefix_lengths = [], [], [], []
    for source, target in pairs:
        sequence = list(source) + [specials.sep] + list(target) + [specials.eos]
        n_prefix = len(source) + 1
        sequences.append(sequence[:-1])
        # Position i predicts token i + 1: the separator predicts the first target token.
        target_rows.append([IGNORE] * (n_prefix - 1) + sequence[n_prefix:])
        segments.append([0] * n_prefix + [1] * (len(sequence) - 1 - n_prefix))
        prefix_lengths.append(n_prefix)
    ids, padding_mask = pad(sequences, specials.pad)
    token_types, _ = pad(segments, 0)
    return Batch(
        ids,
        pad_targets(target_rows, ids.shape[1]),
        pattern,
        padding_mask,
        prefix_lengths=torch.tensor(prefix_lengths) if pattern == "prefix" else None,
        token_types=token_types,
        sparse_logits=True,
    )
