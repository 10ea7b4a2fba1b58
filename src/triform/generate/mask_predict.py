"""Mask-predict (Ghazvininejad et al. 2019, §3): generate with a masked language model.

All target slots start as [MASK]. The first iteration predicts every slot at once; each later
iteration t of T re-masks the n = N · (T - t) / T slots the model is least sure of and predicts them
again from everything else, so that the sequence is refined from its most confident tokens outwards.
Only re-predicted slots get new tokens and new probabilities (§3.2).
"""

from __future__ import annotations

import torch

from triform.generate.fill_mask import check_fills_masks, mask_scores


@torch.inference_mode()
def mask_predict(model, objective, sequence: list[int], *, iterations: int = 10) -> list[int]:
    """Fill every [MASK] of `sequence` (token ids, no [CLS]/[SEP]) jointly, as the masked-LM
    `objective` lays out text; return the filled ids."""
    check_fills_masks(objective.fills_masks, objective.arch, objective.name)
    specials = objective.specials
    if iterations < 1:
        raise ValueError(f"iterations: expected an integer >= 1, got {iterations}")
    model.eval()
    tokens = list(sequence)
    slots = [i for i, token in enumerate(tokens) if token == specials.mask]
    n_slots = len(slots)
    if not n_slots:
        return tokens
    confidence = torch.zeros(n_slots)
    remask = list(range(n_slots))  # indices into `slots`
    for t in range(iterations):
        probabilities, _ = mask_scores(model, objective, [tokens])  # (n masked, V), in slot order
        # The model never predicts special tokens in training; do not let it write them here.
        probabilities[:, list(specials.all_ids)] = 0.0
        best = probabilities.max(-1)
        for k, slot_index in enumerate(remask):
            tokens[slots[slot_index]] = int(best.indices[k])
            confidence[slot_index] = float(best.values[k])
        n_remask = n_slots * (iterations - 1 - t) // iterations
        if n_remask == 0:
            break
        remask = sorted(confidence.topk(n_remask, largest=False).indices.tolist())
        for slot_index in remask:
            tokens[slots[slot_index]] = specials.mask
    return tokens
