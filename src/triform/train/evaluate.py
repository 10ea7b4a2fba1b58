"""Evaluation: loss and perplexity for any objective, masked-token accuracy and pseudo-perplexity
for mlm, BLEU and chrF (sacrebleu) for seq2seq with greedy decoding or beam search.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from triform.data.batches import evaluation_batches
from triform.objectives import IGNORE
from triform.train.batching import prepare, rows, share
from triform.train.distributed import Processes

EVAL_SEED = 1234  # the same masks at every evaluation, so successive losses compare


@torch.no_grad()
def evaluate_loss(
    model,
    objective,
    data,
    *,
    batch_size: int,
    limit: int = 0,
    processes: Processes | None = None,
    autocast=nullcontext,
    word_table=None,
    device: torch.device | None = None,
) -> dict:
    """Mean loss per predicted token over `limit` batches (0: all), its perplexity and token accuracy."""
    processes = processes or Processes()
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    loss_sum = n_targets = correct = 0.0
    for number, indices in enumerate(evaluation_batches(data, batch_size, limit)):
        generator = torch.Generator().manual_seed(EVAL_SEED + number)
        batch = prepare(objective, [data.example(i) for i in indices], generator, word_table)
        start, stop = share(len(indices), processes.rank, processes.world_size)
        weight = 1.0 if stop > start else 0.0  # a process without rows still runs, for sharded models
        local = rows(batch, start, stop) if stop > start else rows(batch, 0, 1)
        local = local.to(device)
        with autocast():
            logits = model(**local.model_inputs())
        targets = local.targets[local.logits_at] if local.sparse_logits else local.targets
        logits, targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
        loss_sum += weight * float(F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum"))
        predicted = targets != IGNORE
        n_targets += weight * float(predicted.sum())
        correct += weight * float((logits.argmax(-1)[predicted] == targets[predicted]).sum())
    loss_sum, n_targets, correct = processes.sum([loss_sum, n_targets, correct])
    model.train(was_training)
    loss = loss_sum / max(n_targets, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50)),
        "accuracy": correct / max(n_targets, 1),
        "tokens": int(n_targets),
    }


@torch.no_grad()
def pseudo_perplexity(
    model,
    windows: list[list[int]],
    specials,
    *,
    pattern: str,
    batch_size: int = 64,
    autocast=nullcontext,
    device: torch.device | None = None,
) -> float:
    """exp of the mean of -log P(token | the text with that token masked), over every token
    (Salazar et al. 2020, §2.3): each token is masked in a row of its own."""
    device = device or torch.device("cpu")
    rows_ids, positions, answers = [], [], []
    for window in windows:
        sequence = [specials.cls] + list(window) + [specials.sep]
        for i in range(1, len(sequence) - 1):
            if window[i - 1] in specials.all_ids:
                continue
            masked = list(sequence)
            masked[i] = specials.mask
            rows_ids.append(masked)
            positions.append(i)
            answers.append(sequence[i])
    total = 0.0
    for start in range(0, len(rows_ids), batch_size):
        chunk = rows_ids[start : start + batch_size]
        length = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), length), specials.pad, dtype=torch.long)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        logits_at = torch.zeros_like(mask)
        for r, row in enumerate(chunk):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = True
            logits_at[r, positions[start + r]] = True
        prefix = mask.sum(1) if pattern == "prefix" else None  # the whole text is the prefix
        with autocast():
            logits = model(
                ids.to(device),
                pattern,
                padding_mask=mask.to(device),
                logits_at=logits_at.to(device),
                **({"prefix_lengths": prefix.to(device)} if prefix is not None else {}),
            )
        log_probs = logits.float().log_softmax(-1)
        answer = torch.tensor(answers[start : start + batch_size], device=log_probs.device)
        total += float(log_probs.gather(1, answer[:, None]).sum())
    return math.exp(-total / max(len(rows_ids), 1))


@torch.no_grad()
def translate_ids(
    model,
    sources: list[list[int]],
    specials,
    *,
    pattern: str,
    max_new_tokens: int,
    num_beams: int = 1,
    precision: str = "fp32",
) -> list[list[int]]:
    """Target ids for each source (without [BOS]/[EOS]) from the generation engine, laid out as the
    seq2seq objective trains: greedy, or beam search with the length penalty of Vaswani et al. (α 0.6),
    at `precision` (the engine sets up its own autocast)."""
    from triform.generate import GenerationConfig, generate_ids, resolve_layout

    layout = resolve_layout(model.config.arch, specials, "seq2seq", pattern)
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams, precision=precision)
    rows = generate_ids(model, layout, [list(s) for s in sources], config)
    return [row.tokens for row in rows]


def bleu_chrf(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (Papineni et al. 2002) and chrF (Popović 2015) as sacrebleu computes them."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": bleu.corpus_score(hypotheses, [references]).score,
        "chrf": chrf.corpus_score(hypotheses, [references]).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
