"""The held-out tasks every compared model is scored on, each the same for every architecture.

- next token: windows of held-out text cut in half; each token of the second half is predicted from
  everything before it (a stack reads the window left to right, an encoder-decoder reads the first
  half in its encoder and predicts the second half in its decoder). Accuracy and perplexity.
- masked token: BERT's masking (15 %, 80/10/10) of held-out windows, the same for every model;
  accuracy at the tokens replaced by [MASK] (a stack predicts them in place, an encoder-decoder's
  decoder writes the text out and is scored at the same positions).
- restore: a sequence-to-sequence task made from the text itself: a sentence lowercased and without
  punctuation in, the sentence as written out (truecasing and punctuation restoration, as after
  speech recognition). Greedy decoding with the generation engine's KV cache, batched; exact match
  and chrF (sacrebleu).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from triform.objectives import IGNORE, make_objective
from triform.objectives.batch import Batch, pad, pad_targets
from triform.objectives.compat import check_pair
from triform.objectives.layout import source_target_batch
from triform.train.evaluate import bleu_chrf, translate_ids

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


def masked_windows(windows: list[list[int]], specials, vocab_size: int) -> list[tuple[list[int], list[int]]]:
    """(input, targets) of each window under BERT's masking, the same for every model; only the
    tokens replaced by [MASK] are targets (the 10 % left unchanged would reward copying the input)."""
    objective = make_objective("mlm", specials, vocab_size, arch="stack")
    generator = torch.Generator().manual_seed(EVAL_SEED)
    masked = []
    for window in windows:
        corrupted, targets = objective.corrupt(window, None, generator)
        masked.append((corrupted, [t if c == specials.mask else IGNORE for c, t in zip(corrupted, targets)]))
    return masked


@torch.no_grad()
def masked_token(model, windows: list[list[int]], specials) -> dict:
    model.eval()
    arch = model.config.arch
    pattern = check_pair(arch, "mlm")  # the default pattern of a masked LM on this architecture
    loss = correct = n = 0
    masked = masked_windows(windows, specials, model.config.vocab_size)
    for start in range(0, len(windows), BATCH):
        chunk, corrupted = windows[start : start + BATCH], masked[start : start + BATCH]
        if arch == "encoder-decoder":
            batch = source_target_batch([(c, w) for (c, _), w in zip(corrupted, chunk)], arch, pattern, specials)
            batch.targets = pad_targets([t + [IGNORE] for _, t in corrupted], batch.ids.shape[1])
        else:
            ids, padding_mask = pad([[specials.cls] + c + [specials.sep] for c, _ in corrupted], specials.pad)
            targets = pad_targets([[IGNORE] + t + [IGNORE] for _, t in corrupted], ids.shape[1])
            batch = Batch(ids, targets, pattern, padding_mask)
        part = scored(model(**batch.model_inputs()), batch.targets)
        loss, correct, n = loss + part[0], correct + part[1], n + part[2]
    return summary(loss, correct, n)


def next_token_targets(windows: list[list[int]]) -> list[int]:
    """The tokens the next-token task predicts: the second half of each window."""
    return [t for w in windows for t in w[len(w) // 2 :]]


def context_free_scores(texts, pairs, tokenizer, specials, log_probs: torch.Tensor) -> dict:
    """What no model scores: the context-free guess (the training text's token frequencies) on the
    next- and masked-token tasks, and the restore task's input copied out unchanged."""

    def guess(targets: list[int]) -> dict:
        targets = torch.tensor(targets, dtype=torch.long)
        loss = float(-log_probs[targets].sum())
        return summary(loss, int((targets == int(log_probs.argmax())).sum()), len(targets))

    masked = [t for _, targets in masked_windows(texts, specials, len(log_probs)) for t in targets if t != IGNORE]
    sources = [text.strip() for text in tokenizer.decode_batch([s for s, _ in pairs], skip_special_tokens=True)]
    references = [text.strip() for text in tokenizer.decode_batch([t for _, t in pairs], skip_special_tokens=True)]
    copied = {
        "exact": sum(s == r for s, r in zip(sources, references)) / max(len(pairs), 1),
        "chrf": bleu_chrf(sources, references)["chrf"],
    }
    return {"next-token": guess(next_token_targets(texts)), "masked-token": guess(masked), "restore": copied}


@torch.no_grad()
def restore(model, pairs: list[tuple[list[int], list[int]]], tokenizer, specials, pattern: str) -> dict:
    model.eval()
    hypotheses, references = [], []
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        room = (
            model.config.max_len - 1
            if model.config.arch == "encoder-decoder"
            else model.config.max_len - 1 - max(len(s) for s, _ in chunk)
        )
        budget = max(1, min(room, 2 * max(len(t) for _, t in chunk) + 4))
        outputs = translate_ids(model, [s for s, _ in chunk], specials, pattern=pattern, max_new_tokens=budget)
        hypotheses += [text.strip() for text in tokenizer.decode_batch(outputs, skip_special_tokens=True)]
        references += [text.strip() for text in tokenizer.decode_batch([t for _, t in chunk], skip_special_tokens=True)]
    scores = bleu_chrf(hypotheses, references)
    exact = sum(h == r for h, r in zip(hypotheses, references)) / max(len(pairs), 1)
    return {
        "exact": exact,
        "chrf": scores["chrf"],
        "example": hypotheses[0] if hypotheses else "",
        "reference": references[0] if references else "",
    }
