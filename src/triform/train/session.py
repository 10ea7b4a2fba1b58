"""Everything a run needs before its first step: tokenizer, objective, data and model config.

Nothing here writes to disk: a tokenizer trained here is saved by the command once the data was
read without error, so a bad input leaves no run folder behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from triform.config import ModelConfig
from triform.data.batches import PairData, WindowData
from triform.data.corpus import Corpus, tokenize_records
from triform.data.readers import DataSource, read_records
from triform.data.shards import is_prepared, load_prepared
from triform.data.tokenizers import (
    KIND_FOR_OBJECTIVE,
    fingerprint,
    load_tokenizer,
    sentence_end_ids,
    train_tokenizer,
    word_start_table,
)
from triform.errors import TriformError
from triform.objectives import Objective, make_objective
from triform.train.config import Resolved
from triform.train.distributed import Processes
from triform.vocab import SpecialTokens

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class Session:
    resolved: Resolved
    tokenizer: object
    specials: SpecialTokens
    model_config: ModelConfig
    objective: Objective
    train_data: WindowData | PairData
    valid_data: WindowData | PairData | None
    word_table: torch.Tensor | None
    objective_options: dict  # as the objective was made with them

    def extra(self) -> dict:
        """What later tools need to know of how the model was trained (saved in config.json)."""
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.objective_options.items()}
        return {"objective": self.resolved.objective, "pattern": self.resolved.pattern, "objective_options": options}


def objective_options(resolved: Resolved, tokenizer, specials: SpecialTokens) -> dict:
    options = dict(resolved.objective_options)
    if resolved.objective == "clm" and resolved.model.arch == "stack":
        options["packed"] = True  # windows of a token stream with [EOS] between documents
    if resolved.objective == "denoise":
        options["sentence_end_ids"] = sentence_end_ids(tokenizer)
    return options


def texts_for_tokenizer(source: DataSource, parallel: bool):
    for record in read_records(source, parallel=parallel):
        yield record.text
        if record.target is not None:
            yield record.target


def obtain_tokenizer(resolved: Resolved, run_dir: Path, processes: Processes):
    """The run's own tokenizer when resuming, the given one, or a new one trained on the data."""
    config = resolved.config
    saved = run_dir / TOKENIZER_FILE
    if config.resume and saved.is_file():
        tokenizer = load_tokenizer(saved)
        if config.tokenizer.path and fingerprint(load_tokenizer(config.tokenizer.path)) != fingerprint(tokenizer):
            raise TriformError(
                f"tokenizer.path: {config.tokenizer.path} differs from {saved}, the tokenizer this run was trained with"
            )
        return tokenizer
    if config.tokenizer.path:
        return load_tokenizer(config.tokenizer.path)
    if is_prepared(config.data.train):
        raise TriformError(
            f"tokenizer.path: {config.data.train} is prepared data; give the tokenizer.json it was prepared with"
        )
    kind = config.tokenizer.kind if config.tokenizer.kind != "auto" else KIND_FOR_OBJECTIVE[resolved.objective]
    vocab_size = config.tokenizer.vocab_size or resolved.model.vocab_size
    tokenizer = None
    if processes.is_main:
        texts = texts_for_tokenizer(config.data.source("train"), resolved.objective == "seq2seq")
        tokenizer = train_tokenizer(
            texts,
            kind,
            vocab_size,
            min_frequency=config.tokenizer.min_frequency,
            n_sentinels=config.tokenizer.sentinels,
        ).to_str()
    from tokenizers import Tokenizer

    return Tokenizer.from_str(processes.broadcast(tokenizer))


def load_corpus(path: str, source: DataSource, tokenizer, parallel: bool, eos: int) -> Corpus:
    if is_prepared(path):
        return load_prepared(path, tokenizer, parallel=parallel)
    return tokenize_records(
        read_records(source, parallel=parallel), tokenizer, "parallel" if parallel else "text", eos, path
    )


def window_length(objective: Objective, max_len: int) -> int:
    """Tokens per language-model example such that the objective's layout fits max_len."""
    name, arch = objective.name, objective.arch
    if arch == "stack" and name == "clm":
        return max_len + 1  # inputs are the first max_len tokens, targets the last max_len
    if arch == "stack" and name == "mlm":
        return max_len - 2  # [CLS] text [SEP]
    if name == "span":
        return largest_span_window(objective, max_len)
    if arch == "stack" and name == "denoise":
        return (max_len - 1) // 2  # corrupted text [SEP] original: the corruption shortens the text
    return max_len - 1  # one [EOS] / [BOS] / [SEP] around the text


def largest_span_window(objective, max_len: int) -> int:
    """Longest text whose span-corrupted layout fits, counting sentinels as the objective places them."""
    best = 2
    for n in range(2, 4 * max_len):
        n_noise = min(max(round(n * objective.noise_density), 1), n - 1)
        n_spans = min(max(round(n_noise / objective.mean_span_length), 1), n - n_noise)
        if objective.arch == "stack":
            fits = n + 2 * n_spans + 1 <= max_len
        else:
            fits = n - n_noise + n_spans + 1 <= max_len and 1 + n_noise + n_spans <= max_len
        if fits:
            best = n
    return best


def make_data(corpus: Corpus, objective: Objective, max_len: int, too_long: str, specials: SpecialTokens):
    if corpus.kind == "parallel":
        return PairData(corpus, max_len, objective.arch, too_long)
    length = window_length(objective, max_len)
    stride = length - 1 if (objective.arch, objective.name) == ("stack", "clm") else length
    separator = specials.sep if objective.name == "mlm" and objective.arch == "stack" else None
    return WindowData(corpus, length, stride, eos_to=separator, eos=specials.eos)


def build_session(resolved: Resolved, run_dir: Path, processes: Processes) -> Session:
    config = resolved.config
    tokenizer = obtain_tokenizer(resolved, run_dir, processes)
    specials = SpecialTokens.from_tokenizer(tokenizer)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    model_config = resolved.model.replace(vocab_size=vocab_size)  # the model's vocabulary is the tokenizer's
    options = objective_options(resolved, tokenizer, specials)
    objective = make_objective(
        resolved.objective, specials, vocab_size, arch=model_config.arch, pattern=resolved.pattern, **options
    )
    parallel = resolved.objective == "seq2seq"
    data = config.data
    train_corpus = load_corpus(data.train, data.source("train"), tokenizer, parallel, specials.eos)
    train_data = make_data(train_corpus, objective, model_config.max_len, data.too_long, specials)
    valid_data = None
    if data.valid:
        valid_corpus = load_corpus(data.valid, data.source("valid"), tokenizer, parallel, specials.eos)
        valid_data = make_data(valid_corpus, objective, model_config.max_len, data.too_long, specials)
    table = torch.tensor(word_start_table(tokenizer)) if getattr(objective, "whole_word", False) else None
    return Session(resolved, tokenizer, specials, model_config, objective, train_data, valid_data, table, options)
