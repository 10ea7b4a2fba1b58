"""Has a demo language model learned anything? Its held-out scores next to those of a guess that
ignores the context.

A uniform guess over the vocabulary is a low bar: a model that only learned how frequent each token
is (a unigram model) beats it by far without reading a word of context. So each model is scored on
the held-out text at exactly the positions its objective predicts, and so is the *context-free
guess*: the training text's token frequencies (add-one smoothed), whose top guess is always the most
frequent token. What a model gains over that guess, it learned from the context.

Masked LM: only positions whose input is [MASK] are scored. BERT's objective also predicts 10 % of
chosen tokens left unchanged in the input (Devlin et al. 2019, §3.1), which a model answers by
copying its input; counting them would credit copying as understanding. A masked model is scored
on several draws of the masks, so that a small held-out text still gives enough scored tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from triform.data.batches import evaluation_batches
from triform.objectives import IGNORE

EVAL_SEED = 4321  # the masks of the held-out text: the same for every masked model
MASK_DRAWS = 4  # passes over the held-out text, each with other masks (one pass for a causal LM)
BATCH = 64


def context_free_log_probs(corpus, vocab_size: int) -> torch.Tensor:
    """log P(token) from the token counts of a (training) corpus, add-one smoothed: (vocab_size,)."""
    counts = np.ones(vocab_size, dtype=np.float64)
    for shard in corpus.shards:
        counts += np.bincount(np.asarray(shard.documents.tokens, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    return torch.from_numpy(np.log(counts / counts.sum())).float()


@torch.no_grad()
def heldout_scores(model, session, log_probs: torch.Tensor) -> dict:
    """The model and the context-free guess on every held-out example, at the same predicted tokens:
    perplexity and top-1 accuracy of each."""
    objective, data, mask = session.objective, session.valid_data, session.specials.mask
    model.eval()
    model_loss = guess_loss = correct = guess_correct = n = 0.0
    top_guess = int(log_probs.argmax())
    draws = MASK_DRAWS if objective.fills_masks else 1
    for number, indices in enumerate(indices for _ in range(draws) for indices in evaluation_batches(data, BATCH)):
        generator = torch.Generator().manual_seed(EVAL_SEED + number)
        batch = objective.prepare([data.example(i) for i in indices], generator)
        logits = model(**batch.model_inputs()).float()  # (N, V) at the predicted tokens, or (B, T, V)
        predicted = batch.targets != IGNORE
        if not batch.sparse_logits:
            logits = logits[predicted]
        targets = batch.targets[predicted]
        if objective.fills_masks:  # [MASK] positions only
            shown_mask = batch.ids[predicted] == mask
            logits, targets = logits[shown_mask], targets[shown_mask]
        model_loss += float(F.cross_entropy(logits, targets, reduction="sum"))
        guess_loss -= float(log_probs[targets].sum())
        correct += float((logits.argmax(-1) == targets).sum())
        guess_correct += float((targets == top_guess).sum())
        n += len(targets)
    n = max(n, 1)
    return {
        "perplexity": math.exp(model_loss / n),
        "accuracy": correct / n,
        "context-free perplexity": math.exp(guess_loss / n),
        "context-free accuracy": guess_correct / n,
        "scored tokens": int(n),
    }
