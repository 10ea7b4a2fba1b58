"""The held-out tasks every compared model is scored on, each the same for every architecture.

- next token: windows of held-out text cut in half; each token of the second half is predicted from
  everything before it (a stack reads the window left to right, an encoder-decoder reads the first
  half in its encoder and predicts the second half in its decoder). Accuracy and perplexity.
- masked token: BERT's masking (15 %, 80/10/10) of held-out windows, the same positions for every
  model; accuracy at the chosen positions (a stack predicts them in place, an encoder-decoder's
  decoder writes the text out and is scored at the same positions).
- restore: a sequence-to-sequence task made from the text itself: a sentence lowercased and without
  punctuation in, the sentence as written out (truecasing and punctuation restoration, as after
  speech recognition). Greedy decoding; exact match and chrF (sacrebleu).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from triform.objectives import IGNORE, make_objective
from triform.objectives.batch import Batch, pad, pad_targets
from triform.objectives.layout import source_target_batch
from triform.train.evaluate import bleu_chrf, greedy_decode

EVAL_SEED = 20200  # the masks of the masked-token task: the same for every model
BATCH = 32
PUNCTUATION = re.compile(r"[^\w\s']|_")


def restore_source(sentence: str) -> str:
    """What the restore task reads: lowercase words without punctuation."""
    return " ".join(PUNCTUATION.sub(" ", sentence).lower().split())


def restore_pairs(sentences, min_words: int = 4, max_words: int = 20) -> list[tuple[str, str]]:
    pairs = []
    for sentence in sentences:
        words = sentence.split()
        source = restore_source(sentence)
        if min_words <= len(words) <= max_words and source and source != sentence:
            pairs.append((source, " ".join(words)))
    return pairs


def scored(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int, int]:
    """(summed loss, correct, count) over the positions whose target is set."""
    logits, targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
    keep = targets != IGNORE
    loss = float(F.cross_entropy(logits[keep], targets[keep], reduction="sum")) if keep.any() else 0.0
    return loss, int((logits[keep].argmax(-1) == targets[keep]).sum()), int(keep.sum())


def summary(loss: float, correct: int, n: int) -> dict:
    return {"accuracy": correct / max(n, 1), "perplexity": math.exp(min(loss / max(n, 1), 50)), "tokens": n}


@torch.no_grad()
def next_token(model, windows: list[list[int]], specials) -> dict:
    model.eval()
    loss = correct = n = 0
    for start in range(0, len(windows), BATCH):
        chunk = windows[start : start + BATCH]
        half = len(chunk[0]) // 2
        if model.config.arch == "encoder-decoder":
            batch = source_target_batch([(w[:half], w[half:]) for w in chunk], "encoder-decoder", "causal", specials)
            batch.targets[:, -1] = IGNORE  # the [EOS] after the window is not a next token of the text
        else:
            ids = torch.tensor([w[:-1] for w in chunk])
            targets = torch.tensor([w[1:] for w in chunk])
            targets[:, : half - 1] = IGNORE  # score the second half only, as the encoder-decoder
            batch = Batch(ids, targets, "causal")
        part = scored(model(**batch.model_inputs()), batch.targets)
        loss, correct, n = loss + part[0], correct + part[1], n + part[2]
    return summary(loss, correct, n)


@torch.no_grad()
def masked_token(model, windows: list[list[int]], specials) -> dict:
    model.eval()
    arch = model.config.arch
    objective = make_objective("mlm", specials, model.config.vocab_size, arch=arch)
    loss = correct = n = 0
    for start in range(0, len(windows), BATCH):
        chunk = windows[start : start + BATCH]
        generator = torch.Generator().manual_seed(EVAL_SEED + start)
        corrupted = [objective.corrupt(w, None, generator) for w in chunk]
        if arch == "encoder-decoder":
            batch = source_target_batch([(c, w) for (c, _), w in zip(corrupted, chunk)], arch, objective.pattern, specials)
            batch.targets = pad_targets([t + [IGNORE] for _, t in corrupted], batch.ids.shape[1])
        else:
            ids, padding_mask = pad([[specials.cls] + c + [specials.sep] for c, _ in corrupted], specials.pad)
            targets = pad_targets([[IGNORE] + t + [IGNORE] for _, t in corrupted], ids.shape[1])
            batch = Batch(ids, targets, objective.pattern, padding_mask)
        part = scored(model(**batch.model_inputs()), batch.targets)
        loss, correct, n = loss + part[0], correct + part[1], n + part[2]
    return summary(loss, correct, n)


@torch.no_grad()
def restore(model, pairs: list[tuple[list[int], list[int]]], tokenizer, specials, pattern: str) -> dict:
    model.eval()
    hypotheses, references = [], []
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        room = model.config.max_len - 1 if model.config.arch == "encoder-decoder" else \
            model.config.max_len - 1 - max(len(s) for s, _ in chunk)  # fmt: skip
        budget = max(1, min(room, 2 * max(len(t) for _, t in chunk) + 4))
        outputs = greedy_decode(model, [s for s, _ in chunk], specials, pattern=pattern, max_new_tokens=budget)
        hypotheses += [text.strip() for text in tokenizer.decode_batch(outputs, skip_special_tokens=True)]
        references += [text.strip() for text in tokenizer.decode_batch([t for _, t in chunk], skip_special_tokens=True)]
    scores = bleu_chrf(hypotheses, references)
    exact = sum(h == r for h, r in zip(hypotheses, references)) / max(len(pairs), 1)
    return {"exact": exact, "chrf": scores["chrf"], "example": hypotheses[0] if hypotheses else "", "reference": references[0] if references else ""}
