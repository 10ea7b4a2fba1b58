"""Evaluation of a trained model with the objective it was trained with (what `triform eval` reports):
loss, perplexity and accuracy for every objective, and the metrics an objective names beyond them
(`Objective.metrics`): pseudo-perplexity for a masked LM, BLEU and chrF (sacrebleu) of decoded
translations for seq2seq.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch

from triform.checkpoint import ADAPTER_CONFIG, CONFIG_FILE, load_model, refuse_adapters
from triform.checkpoint import model_folder as named_folder
from triform.data.readers import DataSource
from triform.data.tokenizers import fingerprint, load_tokenizer
from triform.errors import TriformError
from triform.generate import GenerationConfig, generate_ids, resolve_layout
from triform.kernels.int8 import check_scheme
from triform.kernels.int8 import quantize as quantize_model
from triform.objectives import read_recipe
from triform.precision import autocast as precision_context
from triform.progress import Throttle, count, duration, say
from triform.train.distributed import Processes, pick_device
from triform.train.problem import EvalContext
from triform.train.session import load_corpus, make_data
from triform.vocab import SpecialTokens


def model_folder(path: str | Path) -> Path:
    """The model folder `path` names (triform.checkpoint.model_folder); an error where there is none."""
    folder = named_folder(path)
    if not (folder / CONFIG_FILE).is_file():
        refuse_adapters(named_folder(path, (ADAPTER_CONFIG,)))
        raise TriformError(f"{path}: no model here; expected a model folder with {CONFIG_FILE}, or a run folder")
    return folder


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
    if tokenizer_path is None and pretrained.specials is not None:
        return tokenizer, pretrained.specials  # the folder's own (an imported GPT-2's <|endoftext|> for every role)
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
    quantize: str | None = None,
) -> dict:
    """The metrics of a saved model on a corpus, with the objective its recipe names; with `quantize`
    ("int8"), of its int8 version (kernels/int8.py)."""
    if quantize is not None:
        check_scheme(quantize)
    folder = model_folder(model_path)
    pretrained = load_model(folder)
    if quantize is not None:
        quantize_model(pretrained.model, quantize)
    tokenizer, specials = matching_tokenizer(folder, pretrained, tokenizer_path)
    extra = pretrained.extra
    if "recipe" not in extra and "objective" not in extra:
        raise TriformError(f"{folder / CONFIG_FILE}: no recipe in extra; this model was not saved by triform train")
    config = pretrained.config
    recipe = read_recipe(extra, config.arch, str(folder / CONFIG_FILE))
    # Text reaches the objective as windows of a packed token stream, as in training.
    objective = recipe.build(
        config.arch, specials, config.vocab_size, tokenizer=tokenizer, packed=not recipe.reads_pairs
    )
    run_device = pick_device(device)
    model = pretrained.model.to(run_device).eval()
    autocast = partial(precision_context, precision, run_device)
    corpus = load_corpus(source.path, source, tokenizer, objective.reads_pairs, specials.eos)
    data = make_data(corpus, objective, config.max_len, too_long, specials)
    if max_examples and max_examples < len(data):
        picks = np.linspace(0, len(data) - 1, max_examples).round().astype(int)  # spread over the whole set
        data.keep(picks)
    started = time.monotonic()
    metrics = {"model": str(folder), "objective": objective.describe(), "examples": len(data)}
    context = EvalContext(batch_size, 0, Processes(), autocast, run_device, progress=EvalProgress(len(data)))
    metrics.update(objective.evaluate(model, data, context))
    options = dict(
        tokenizer=tokenizer,
        batch_size=batch_size,
        autocast=autocast,
        device=run_device,
        precision=precision,
        num_beams=num_beams,
        pppl_tokens=pppl_tokens,
    )
    for name in objective.metrics:
        metrics.update(METRICS[name](model, objective, data, **options))
    metrics["seconds"] = round(time.monotonic() - started, 1)
    return metrics


class EvalProgress:
    """`eval: 12/40 batches, 1.5k/5.0k examples | 230 examples/s | ETA 15s` on stderr, at most every
    few seconds and once at the end (objectives' evaluate passes call it through EvalContext)."""

    def __init__(self, examples: int):
        self.examples, self.started, self.throttle = examples, time.monotonic(), Throttle()
        self.throttle()  # nothing to say before the first batches: the first line comes a few seconds in

    def __call__(self, done: int, total: int, examples: int) -> None:
        if not self.throttle(force=done == total and time.monotonic() - self.started > 2):
            return
        rate = examples / max(time.monotonic() - self.started, 1e-9)
        left = duration((self.examples - examples) / rate) if rate else "?"
        say(f"eval: {done}/{total} batches, {count(examples)}/{count(self.examples)} examples | "
            f"{rate:.0f} examples/s | ETA {left}")  # fmt: skip


@torch.no_grad()
def pseudo_perplexity(
    model, objective, windows: list[list[int]], *, batch_size: int = 64, autocast=nullcontext, device=None
) -> float:
    """exp of the mean of -log P(token | the text with that token masked), over every token
    (Salazar et al. 2020, §2.3): each token is masked in a row of its own, laid out as the masked
    LM objective lays out a text to fill."""
    specials, device = objective.specials, device or torch.device("cpu")
    rows, answers = [], []
    for window in windows:
        for i, token in enumerate(window):
            if token in specials.all_ids:
                continue
            rows.append([*window[:i], specials.mask, *window[i + 1 :]])
            answers.append(token)
    total = 0.0
    for start in range(0, len(rows), batch_size):
        batch = objective.masked_inputs(rows[start : start + batch_size]).to(device)
        with autocast():
            logits = model(**batch.model_inputs())
        log_probs = logits.float().log_softmax(-1)
        answer = torch.tensor(answers[start : start + batch_size], device=log_probs.device)
        total += float(log_probs.gather(1, answer[:, None]).sum())
    return math.exp(-total / max(len(rows), 1))


def pseudo_perplexity_metric(
    model, objective, data, *, pppl_tokens: int, batch_size: int, autocast, device, **_
) -> dict:
    windows, total = [], 0
    for index in range(len(data)):
        if pppl_tokens and total >= pppl_tokens:
            break
        window = data.example(index)
        windows.append(window[: pppl_tokens - total] if pppl_tokens else window)
        total += len(windows[-1])
    value = pseudo_perplexity(model, objective, windows, autocast=autocast, device=device)
    return {"pseudo_perplexity": value, "pseudo_perplexity_tokens": sum(len(w) for w in windows)}


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
    layout = resolve_layout(model.config.arch, specials, "seq2seq", pattern)
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams, precision=precision)
    rows = generate_ids(model, layout, [list(s) for s in sources], config)
    return [row.tokens for row in rows]


def translation_metric(
    model, objective, data, *, tokenizer, batch_size: int, precision: str, num_beams: int, **_
) -> dict:
    """Translations of every source, scored against the references with sacrebleu."""
    hypotheses, references = [], []
    order = np.argsort(data.lengths(), kind="stable")  # similar lengths together: less padding
    started = time.monotonic()
    for start in range(0, len(order), batch_size):
        pairs = [data.example(int(i)) for i in order[start : start + batch_size]]
        longest = max(len(t) for _, t in pairs)
        if data.arch == "encoder-decoder":
            budget = min(data.max_len - 1, 2 * longest + 10)
        else:
            budget = data.max_len - 1 - max(len(s) for s, _ in pairs)
        outputs = translate_ids(
            model,
            [s for s, _ in pairs],
            objective.specials,
            pattern=objective.pattern,
            max_new_tokens=max(budget, 1),
            num_beams=num_beams,
            precision=precision,
        )
        hypotheses += tokenizer.decode_batch(outputs, skip_special_tokens=True)
        references += tokenizer.decode_batch([t for _, t in pairs], skip_special_tokens=True)
        say(f"eval: translated {len(hypotheses)}/{len(order)} in {time.monotonic() - started:.0f}s")
    scores = {"decoding": "greedy" if num_beams == 1 else f"beam {num_beams}", **bleu_chrf(hypotheses, references)}
    scores["example_translation"] = hypotheses[len(hypotheses) // 2]
    scores["example_reference"] = references[len(references) // 2]
    return scores


# The metrics an objective may name (Objective.metrics), computed here where decoding is at hand.
METRICS = {"pseudo_perplexity": pseudo_perplexity_metric, "bleu_chrf": translation_metric}


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
