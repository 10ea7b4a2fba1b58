"""Tokenizers trained on the user's text with the `tokenizers` library.

Three families, each as its model was published: byte-level BPE (GPT-2, Radford et al. 2019 §2.2),
WordPiece (BERT, Devlin et al. 2019) and Unigram (T5 through SentencePiece, Kudo 2018). Every
tokenizer carries triform's special tokens at ids 0, 1, 2, ... so `SpecialTokens.from_tokenizer`
finds them, and adds none of them by itself: objectives lay out their own [BOS], [SEP], [EOS].
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from triform.errors import TriformError
from triform.io import atomic_write
from triform.vocab import DEFAULT_SENTINELS, SpecialTokens, special_token_strings, unpadded

TokenizerKind = Literal["bpe", "wordpiece", "unigram"]
KINDS = ("bpe", "wordpiece", "unigram")


def new_tokenizer(kind: str):
    """An untrained tokenizer of `kind` and the trainer class arguments it needs."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    elif kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
    elif kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
    else:
        raise TriformError(f"tokenizer.kind: expected one of {list(KINDS)}, got {kind!r}")
    return tokenizer


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "bpe",
    vocab_size: int = 8192,
    *,
    min_frequency: int = 2,
    n_sentinels: int = DEFAULT_SENTINELS,
    length: int | None = None,
):
    """Train a tokenizer of `kind` on `texts`; the special tokens take the first ids."""
    from tokenizers import pre_tokenizers, trainers

    specials = special_token_strings(n_sentinels)
    if vocab_size <= len(specials):
        raise TriformError(
            f"tokenizer.vocab_size: {vocab_size} leaves no room for text after the {len(specials)} special tokens"
        )
    tokenizer = new_tokenizer(kind)
    common = dict(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    if kind == "bpe":
        trainer = trainers.BpeTrainer(
            min_frequency=min_frequency, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common
        )
    elif kind == "wordpiece":
        trainer = trainers.WordPieceTrainer(min_frequency=min_frequency, **common)
    else:
        trainer = trainers.UnigramTrainer(unk_token="[UNK]", **common)
    tokenizer.train_from_iterator(texts, trainer, length=length)
    if tokenizer.get_vocab_size() <= len(specials):
        raise TriformError("the tokenizer learned no tokens: the training text is empty")
    return tokenizer


def save_tokenizer(tokenizer, path: str | os.PathLike) -> Path:
    """Write `tokenizer.json` atomically (triform.io.atomic_write)."""
    return atomic_write(path, lambda temporary: tokenizer.save(str(temporary)))


def load_tokenizer(path: str | os.PathLike):
    """Load a `tokenizer.json` (or the one inside a model folder) and check its special tokens."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TriformError(f"{path}: tokenizer not found; expected a tokenizer.json file")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises a plain Exception with serde's message
        raise TriformError(f"{path}: not a tokenizers JSON file ({str(error).splitlines()[0]})") from None
    SpecialTokens.from_tokenizer(tokenizer, source=str(path))
    return unpadded(tokenizer)


def fingerprint(tokenizer) -> str:
    """A hash of everything that decides how text becomes ids."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
