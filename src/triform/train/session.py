"""Everything a run needs before its first step: tokenizer, objective, data and model config.

Nothing here writes to disk: a tokenizer trained here is saved by the caller once the data was
read without error, so a bad input leaves no run folder behind. What depends on the objective
(whether it reads pairs, how long a window is, which tokenizer its reference model used) is asked of
the objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from triform.checkpoint import CONFIG_FILE, read_config
from triform.config import ModelConfig
from triform.data.batches import BatchOrder, PairData, WindowData
from triform.data.corpus import Corpus, tokenize_records
from triform.data.readers import DataError, DataSource, read_records, resolve_files
from triform.data.shards import is_prepared, load_prepared
from triform.data.tokenizers import fingerprint, load_tokenizer, train_tokenizer
from triform.errors import TriformError
from triform.objectives import Objective, objective_class
from triform.train.config import Resolved
from triform.train.distributed import Processes
from triform.vocab import SpecialTokens, unpadded

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

    @property
    def bucketed(self) -> bool:
        """Whether training batches group pairs of similar lengths (data.bucket); language-model
        windows all have one length."""
        return self.resolved.config.data.bucket and isinstance(self.train_data, PairData)

    def batch_order(self, batch_size: int, seed: int) -> BatchOrder:
        return BatchOrder(
            self.train_data, batch_size, seed, bucket=self.bucketed, name=str(self.resolved.config.data.train)
        )

    def extra(self) -> dict:
        """What later tools need to know of how the model was trained (saved in config.json)."""
        recipe = self.resolved.recipe
        return {"recipe": recipe.to_dict(), "uses": recipe.uses(self.model_config.arch)}


def texts_for_tokenizer(source: DataSource, parallel: bool):
    for record in read_records(source, parallel=parallel):
        yield record.text
        if record.target is not None:
            yield record.target


def init_specials(config) -> SpecialTokens | None:
    """The special tokens the `--init` model folder records (an imported model's own, such as GPT-2's
    one `<|endoftext|>` for every role), or None."""
    if not config.init:
        return None
    values = read_config(config.init).get("special_tokens")
    return SpecialTokens.from_dict(values, f"{config.init}/{CONFIG_FILE}") if values else None


def obtain_tokenizer(resolved: Resolved, run_dir: Path, processes: Processes):
    """The run's own tokenizer when resuming, the given one, or a new one trained on the data."""
    config = resolved.config
    own = Path(config.init) / TOKENIZER_FILE if config.init else None
    if own is not None and config.tokenizer.path and Path(config.tokenizer.path) == own and init_specials(config):
        from tokenizers import Tokenizer

        return unpadded(Tokenizer.from_file(str(own)))  # its special tokens are the folder's, not triform's names
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
    objective = objective_class(resolved.objective)
    kind = config.tokenizer.kind if config.tokenizer.kind != "auto" else objective.tokenizer_kind
    vocab_size = config.tokenizer.vocab_size or resolved.model.vocab_size
    tokenizer = None
    if processes.is_main:
        texts = texts_for_tokenizer(config.data.source("train"), objective.reads_pairs)
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
    kind = "parallel" if parallel else "text"
    return tokenize_records(read_records(source, parallel=parallel), tokenizer, kind, eos, path)


def make_data(corpus: Corpus, objective: Objective, max_len: int, too_long: str, specials: SpecialTokens):
    """Pairs for an objective that reads them; otherwise windows of the token stream, cut as the
    objective lays them out."""
    if corpus.kind == "parallel":
        return PairData(corpus, max_len, objective.arch, too_long)
    windows = objective.windows(max_len)
    return WindowData(corpus, windows.length, windows.stride, eos_to=windows.separator, eos=specials.eos)


def build_objective(resolved: Resolved, tokenizer, arch: str, specials: SpecialTokens | None = None) -> Objective:
    """The run's objective; a text corpus reaches it as windows of a packed token stream."""
    specials = specials or SpecialTokens.from_tokenizer(tokenizer)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    return resolved.recipe.build(
        arch, specials, vocab_size, tokenizer=tokenizer, packed=not resolved.recipe.reads_pairs
    )


def check_data_paths(data) -> None:
    """Each data path names files: checked before a tokenizer is trained and the training text is
    tokenized (minutes on a large corpus), rather than when the validation text is read after them."""
    for name in ("train", "valid", "target_path", "valid_target_path"):
        pattern = getattr(data, name)
        if pattern and not is_prepared(pattern):
            try:
                resolve_files(pattern)
            except DataError as error:
                raise TriformError(f"data.{name}: {error}") from None


def build_session(resolved: Resolved, run_dir: Path, processes: Processes) -> Session:
    config = resolved.config
    check_data_paths(config.data)
    tokenizer = obtain_tokenizer(resolved, run_dir, processes)
    specials = init_specials(config) or SpecialTokens.from_tokenizer(tokenizer)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    model_config = resolved.model.replace(vocab_size=vocab_size)  # the model's vocabulary is the tokenizer's
    objective = build_objective(resolved, tokenizer, model_config.arch, specials)
    data = config.data
    train_corpus = load_corpus(data.train, data.source("train"), tokenizer, objective.reads_pairs, specials.eos)
    train_data = make_data(train_corpus, objective, model_config.max_len, data.too_long, specials)
    valid_data = None
    if data.valid:
        valid_corpus = load_corpus(data.valid, data.source("valid"), tokenizer, objective.reads_pairs, specials.eos)
        valid_data = make_data(valid_corpus, objective, model_config.max_len, data.too_long, specials)
    return Session(resolved, tokenizer, specials, model_config, objective, train_data, valid_data)
