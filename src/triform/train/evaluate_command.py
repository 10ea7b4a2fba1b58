"""Evaluate a saved model on a corpus, with the objective it was trained with (read from its
config.json) — what `triform eval` prints."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from triform.checkpoint import CONFIG_FILE, load_model
from triform.data.readers import DataSource
from triform.data.tokenizers import fingerprint, load_tokenizer, word_start_table
from triform.errors import TriformError
from triform.objectives import make_objective
from triform.precision import autocast as precision_context
from triform.progress import say
from triform.train import checkpoint as ckpt
from triform.train.distributed import pick_device
from triform.train.evaluate import bleu_chrf, evaluate_loss, pseudo_perplexity, translate_ids
from triform.train.session import load_corpus, make_data
from triform.vocab import SpecialTokens


def model_folder(path: str | Path) -> Path:
    """The model folder `path` names: itself, or in a run folder its final model, best, or newest checkpoint."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    for candidate in (path / ckpt.FINAL, path / ckpt.BEST, *reversed(ckpt.checkpoints(path))):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise TriformError(f"{path}: no model here; expected a model folder with {CONFIG_FILE}, or a run folder")


def matching_tokenizer(folder: Path, pretrained, tokenizer_path: str | None):
    """The model's tokenizer; one given on the command line must be the same."""
    tokenizer = pretrained.tokenizer
    if tokenizer_path:
        given = load_tokenizer(tokenizer_path)
        if tokenizer is not None and fingerprint(given) != fingerprint(tokenizer):
            raise TriformError(
                f"--tokenizer: {tokenizer_path} differs from {folder / 'tokenizer.json'}, the model's own tokenizer"
            )
        tokenizer = given
    if tokenizer is None:
        raise TriformError(f"{folder}: holds no tokenizer.json; pass --tokenizer")
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size != pretrained.config.vocab_size:
        raise TriformError(
            f"--tokenizer: has {size} tokens, but the model in {folder} has vocab_size {pretrained.config.vocab_size}"
        )
    specials = SpecialTokens.from_tokenizer(tokenizer)
    if pretrained.specials is not None and pretrained.specials != specials:
        raise TriformError(f"--tokenizer: its special-token ids differ from those in {folder / CONFIG_FILE}")
    return tokenizer, specials


def evaluate_model(
    model_path,
    source: DataSource,
    *,
    tokenizer_path=None,
    batch_size=32,
    max_examples=0,
    pppl_tokens=4096,
    too_long="error",
    precision="auto",
    device="auto",
    num_beams=1,
) -> dict:
    folder = model_folder(model_path)
    pretrained = load_model(folder)
    tokenizer, specials = matching_tokenizer(folder, pretrained, tokenizer_path)
    extra = pretrained.extra
    if "objective" not in extra:
        raise TriformError(
            f'{folder / CONFIG_FILE}: no "objective" in extra; this model was not saved by triform train'
        )
    name, pattern = extra["objective"], extra.get("pattern")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in extra.get("objective_options", {}).items()}
    config = pretrained.config
    objective = make_objective(name, specials, config.vocab_size, arch=config.arch, pattern=pattern, **options)
    run_device = pick_device(device)
    model = pretrained.model.to(run_device).eval()
    autocast = partial(precision_context, precision, run_device)
    corpus = load_corpus(source.path, source, tokenizer, name == "seq2seq", specials.eos)
    data = make_data(corpus, objective, config.max_len, too_long, specials)
    if max_examples and max_examples < len(data):
        picks = np.linspace(0, len(data) - 1, max_examples).round().astype(int)  # spread over the whole set
        data.keep(picks)
    table = torch.tensor(word_start_table(tokenizer)) if getattr(objective, "whole_word", False) else None
    started = time.monotonic()
    metrics = {
        "model": str(folder),
        "objective": f"{config.arch} + {name} + {objective.pattern}",
        "examples": len(data),
    }
    metrics.update(
        evaluate_loss(
            model, objective, data, batch_size=batch_size, autocast=autocast, word_table=table, device=run_device
        )
    )
    if name == "mlm" and config.arch == "stack":
        windows = pppl_windows(data, pppl_tokens)
        metrics["pseudo_perplexity"] = pseudo_perplexity(
            model, windows, specials, pattern=objective.pattern, autocast=autocast, device=run_device
        )
        metrics["pseudo_perplexity_tokens"] = sum(len(w) for w in windows)
    if name == "seq2seq":
        metrics["decoding"] = "greedy" if num_beams == 1 else f"beam {num_beams}"
        metrics.update(
            translation_scores(model, data, tokenizer, specials, objective.pattern, batch_size, precision, num_beams)
        )
    metrics["seconds"] = round(time.monotonic() - started, 1)
    return metrics


def pppl_windows(data, budget: int) -> list[list[int]]:
    windows, total = [], 0
    for index in np.linspace(0, len(data) - 1, len(data)).astype(int):
        if budget and total >= budget:
            break
        window = data.example(int(index))
        windows.append(window[: budget - total] if budget else window)
        total += len(windows[-1])
    return windows


def translation_scores(model, data, tokenizer, specials, pattern, batch_size, precision, num_beams) -> dict:
    """Translations of every source, scored against the references with sacrebleu."""
    hypotheses, references = [], []
    order = np.argsort(data.lengths(), kind="stable")  # similar lengths together: less padding
    started = time.monotonic()
    for start in range(0, len(order), batch_size):
        pairs = [data.example(int(i)) for i in order[start : start + batch_size]]
        longest = max(len(t) for _, t in pairs)
        budget = (
            min(data.max_len - 1, 2 * longest + 10)
            if data.arch == "encoder-decoder"
            else data.max_len - 1 - max(len(s) for s, _ in pairs)
        )
        outputs = translate_ids(
            model,
            [s for s, _ in pairs],
            specials,
            pattern=pattern,
            max_new_tokens=max(budget, 1),
            num_beams=num_beams,
            precision=precision,
        )
        hypotheses += tokenizer.decode_batch(outputs, skip_special_tokens=True)
        references += tokenizer.decode_batch([t for _, t in pairs], skip_special_tokens=True)
        say(f"eval: translated {len(hypotheses)}/{len(order)} in {time.monotonic() - started:.0f}s")
    scores = bleu_chrf(hypotheses, references)
    scores["example_translation"] = hypotheses[len(hypotheses) // 2]
    scores["example_reference"] = references[len(references) // 2]
    return scores
