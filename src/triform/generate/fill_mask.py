"""Fill-mask for a model whose objective fills masks (a stack trained with `mlm`): the most likely
tokens at each [MASK], with probabilities.

The text is laid out as the objective laid out its training text (`MaskedLM.masked_inputs`:
``[CLS] text [SEP]``, under the pattern the model was trained with, the whole text as the prefix
under the prefix pattern). Texts of different lengths are padded on the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from triform.errors import TriformError


@dataclass(frozen=True)
class Candidate:
    id: int
    probability: float
    token: str = ""  # the token's text, when a tokenizer is known


def check_fills_masks(fills: bool, arch: str, objective: str) -> None:
    if not fills:
        raise TriformError(
            f"fill-mask needs a stack trained with mlm; this model is an {arch} trained with {objective}"
        )


def mask_scores(model, objective, sequences: list[list[int]]) -> tuple[Tensor, Tensor]:
    """The probabilities (N, V) at the N [MASK] slots of the laid-out sequences, in reading order,
    and the (B, T) boolean map of those slots."""
    device = model.head.projection.weight.device
    batch = objective.masked_inputs(sequences).to(device)
    logits = model(**batch.model_inputs())
    return logits.float().softmax(-1), batch.logits_at  # (N, V)


@torch.inference_mode()
def fill_mask(model, objective, sequences: list[list[int]], *, top_k: int = 5) -> list[list[list[Candidate]]]:
    """For each sequence (token ids with [MASK] ids, no [CLS]/[SEP]), for each of its masks in
    order, the top_k candidates, most likely first. Each mask is predicted independently of the
    others, as BERT was trained."""
    check_fills_masks(objective.fills_masks, objective.arch, objective.name)
    if top_k < 1:
        raise ValueError(f"top_k: expected an integer >= 1, got {top_k}")
    model.eval()
    for index, sequence in enumerate(sequences):
        if objective.specials.mask not in sequence:
            raise TriformError(f"text {index}: no [MASK] to fill")
    probabilities, at_masks = mask_scores(model, objective, sequences)
    top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    values, ids = top.values.tolist(), top.indices.tolist()
    counts = at_masks.sum(-1).tolist()
    results, start = [], 0
    for count in counts:
        results.append([[Candidate(i, p) for i, p in zip(ids[m], values[m])] for m in range(start, start + count)])
        start += count
    return results
