"""Fill-mask for a stack trained with `mlm`: the most likely tokens at each [MASK], with probabilities.

The text is laid out as in training, ``[CLS] text [SEP]`` (objectives/mlm.py), and read under the
pattern the model was trained with; under the prefix pattern the whole text is the prefix, so that
every mask sees both sides as it did in training. Texts of different lengths are padded on the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from triform.errors import TriformError
from triform.objectives.batch import pad
from triform.vocab import SpecialTokens


@dataclass(frozen=True)
class Candidate:
    id: int
    probability: float
    token: str = ""  # the token's text, when a tokenizer is known


def check_masked_lm(arch: str, objective: str | None, specials: SpecialTokens) -> None:
    if arch != "stack" or (objective is not None and objective != "mlm"):
        trained = f"an {arch}" + (f" trained with {objective}" if objective else "")
        raise TriformError(f"fill-mask needs a stack trained with mlm; this model is {trained}")
    specials.require(("cls", "sep", "mask"), "fill-mask")


def mask_scores(model, sequences: list[list[int]], specials: SpecialTokens, pattern: str) -> tuple[Tensor, Tensor]:
    """Run ``[CLS] sequence [SEP]`` for each sequence; return the probabilities (N, V) at the N
    [MASK] slots, in reading order, and the (B, T) boolean map of those slots."""
    framed = [[specials.cls] + list(s) + [specials.sep] for s in sequences]
    device = model.head.projection.weight.device
    ids, padding_mask = pad(framed, specials.pad if specials.pad is not None else 0)
    ids = ids.to(device)
    padding_mask = None if padding_mask is None else padding_mask.to(device)
    at_masks = ids == specials.mask
    prefix_lengths = torch.full((len(framed),), ids.shape[1], device=device) if pattern == "prefix" else None
    logits = model(ids, pattern, padding_mask=padding_mask, prefix_lengths=prefix_lengths, logits_at=at_masks)
    return logits.float().softmax(-1), at_masks  # (N, V)


@torch.inference_mode()
def fill_mask(
    model, sequences: list[list[int]], specials: SpecialTokens, *, pattern: str = "bidirectional", top_k: int = 5
) -> list[list[list[Candidate]]]:
    """For each sequence (token ids with [MASK] ids, no [CLS]/[SEP]), for each of its masks in
    order, the top_k candidates, most likely first. Each mask is predicted independently of the
    others, as BERT was trained."""
    if top_k < 1:
        raise ValueError(f"top_k: expected an integer >= 1, got {top_k}")
    model.eval()
    for index, sequence in enumerate(sequences):
        if specials.mask not in sequence:
            raise TriformError(f"text {index}: no [MASK] to fill")
    probabilities, at_masks = mask_scores(model, sequences, specials, pattern)
    top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    values, ids = top.values.tolist(), top.indices.tolist()
    counts = at_masks.sum(-1).tolist()
    results, start = [], 0
    for count in counts:
        results.append([[Candidate(i, p) for i, p in zip(ids[m], values[m])] for m in range(start, start + count)])
        start += count
    return results
