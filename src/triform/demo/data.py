"""The demo's data, written as files that `triform train` reads: real text (the standard library's
docstrings, or the user's `--data`) split into train and validation, the number pairs, and one
tokenizer for each."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from triform.data.readers import DataSource, read_records
from triform.data.tokenizers import save_tokenizer, train_tokenizer
from triform.demo.docstrings import docstring_sentences, split_by_module, standard_library
from triform.demo.numbers import number_pairs
from triform.demo.plan import NUMBER_VOCAB, VALID_NUMBERS, Size
from triform.errors import TriformError
from triform.io import write_lines

VALID_EVERY = 20  # of the user's documents, every 20th is held out


@dataclass
class TextData:
    train: Path
    valid: Path
    tokenizer: Path
    origin: str  # where the text came from, in words
    n_train: int
    valid_texts: list[str]


@dataclass
class NumberData:
    train: Path
    valid: Path
    tokenizer: Path
    limit: int
    n_train: int
    valid_pairs: list[tuple[int, str, str]]


def sampled_documents(path: str, n: int, seed: int) -> list[str]:
    """Up to `n` documents of the user's data, drawn evenly from all of it (reservoir sampling)."""
    rng = random.Random(seed)
    kept: list[tuple[int, str]] = []
    for index, record in enumerate(read_records(DataSource(path), parallel=False)):
        if not n or len(kept) < n:
            kept.append((index, record.text))
        else:
            slot = rng.randrange(index + 1)
            if slot < n:
                kept[slot] = (index, record.text)
    return [text for _, text in sorted(kept)]


def split_every(documents: list[str], data: str, who: str) -> tuple[list[str], list[str]]:
    """(train, valid): every VALID_EVERY-th document held out."""
    if len(documents) < 2 * VALID_EVERY:
        raise TriformError(f"--data: {data} holds {len(documents)} documents; {who} needs at least {2 * VALID_EVERY}")
    valid = documents[VALID_EVERY - 1 :: VALID_EVERY]
    return [d for i, d in enumerate(documents) if (i + 1) % VALID_EVERY], valid


def prepare_text(folder: Path, size: Size, data: str | None = None, seed: int = 0) -> TextData:
    if data is None:
        sentences = docstring_sentences(limit=size.text_sentences)
        train, valid = split_by_module(sentences, valid_fraction=0.08)
        origin = f"{len(sentences):,} sentences of the docstrings of Python's standard library ({standard_library()})"
    else:
        documents = sampled_documents(data, size.text_sentences or 200_000, seed)
        train, valid = split_every(documents, data, "the demo")
        origin = f"{len(documents):,} documents of {data}"
    tokenizer = train_tokenizer(train, "bpe", size.text_vocab, n_sentinels=0)
    return TextData(
        write_lines(folder / "text-train.txt", train),
        write_lines(folder / "text-valid.txt", valid),
        save_tokenizer(tokenizer, folder / "text-tokenizer.json"),
        origin,
        len(train),
        valid,
    )


def prepare_numbers(folder: Path, size: Size, seed: int = 0) -> NumberData:
    train = number_pairs(size.number_examples, limit=size.number_limit, seed=seed)
    valid = number_pairs(VALID_NUMBERS, limit=size.number_limit, seed=seed + 1, exclude={n for n, _, _ in train})
    tokenizer = train_tokenizer([side for _, e, g in train for side in (e, g)], "bpe", NUMBER_VOCAB, n_sentinels=0)

    def rows(pairs):
        return [f"{english}\t{german}" for _, english, german in pairs]

    return NumberData(
        write_lines(folder / "numbers-train.tsv", rows(train)),
        write_lines(folder / "numbers-valid.tsv", rows(valid)),
        save_tokenizer(tokenizer, folder / "numbers-tokenizer.json"),
        size.number_limit,
        len(train),
        valid,
    )
