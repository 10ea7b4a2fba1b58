"""Tokenized corpora: documents as token ids back to back, in memory or memory-mapped from shards.

A text corpus is one stream per shard in which every document is followed by [EOS] (GPT-2's
format), so language-model windows can be cut from it directly. A parallel corpus keeps the source
and target streams apart, with the file and line of each pair for error messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from triform.data.readers import Record
from triform.vocab import unpadded

ENCODE_BATCH = 1024  # records tokenized per call: the Rust side spreads a batch over the cores


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class Documents:
    """tokens[ends[i - 1]:ends[i]] are the ids of document i."""

    tokens: np.ndarray
    ends: np.ndarray  # int64, cumulative

    def __len__(self) -> int:
        return len(self.ends)

    def lengths(self) -> np.ndarray:
        return np.diff(self.ends, prepend=0)

    def document(self, index: int) -> np.ndarray:
        start = self.ends[index - 1] if index else 0
        return self.tokens[start : self.ends[index]]


@dataclass
class Shard:
    """One piece of a corpus. `targets` and `origins` exist for parallel data only."""

    documents: Documents
    targets: Documents | None = None
    origins: np.ndarray | None = None  # (n, 2) int64: index into Corpus.files, line number

    @property
    def n_tokens(self) -> int:
        return int(self.documents.ends[-1]) if len(self.documents) else 0


@dataclass
class Corpus:
    kind: str  # "text" or "parallel"
    shards: list[Shard]
    files: list[str] = field(default_factory=list)
    name: str = "corpus"  # where it came from, for messages

    @property
    def n_documents(self) -> int:
        return sum(len(s.documents) for s in self.shards)

    @property
    def n_tokens(self) -> int:
        return sum(
            s.n_tokens + (int(s.targets.ends[-1]) if s.targets is not None and len(s.targets) else 0)
            for s in self.shards
        )


class ShardBuilder:
    """Tokenizes records in batches and accumulates them into a shard of at most `shard_tokens` ids."""

    def __init__(self, tokenizer, kind: str, eos_id: int):
        self.tokenizer, self.kind, self.eos_id = unpadded(tokenizer), kind, eos_id
        self.dtype = token_dtype(tokenizer.get_vocab_size(with_added_tokens=True))
        self.files: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        self.parts: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.target_parts: list[np.ndarray] = []
        self.target_lengths: list[np.ndarray] = []
        self.origins: list[tuple[int, int]] = []
        self.n_tokens = 0
        self.n_records = 0

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        ids = [e.ids for e in encodings]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for row in ids for t in row), dtype=self.dtype, count=int(lengths.sum()))
        return flat, lengths

    def add(self, records: list[Record]) -> None:
        if self.kind == "text":
            flat, lengths = self.encode([r.text for r in records])
            # Each document is followed by [EOS]: insert one after every document's ids.
            flat = np.insert(flat, np.cumsum(lengths), self.eos_id).astype(self.dtype)
            lengths = lengths + 1
        else:
            flat, lengths = self.encode([r.text for r in records])
            target, target_lengths = self.encode([r.target or "" for r in records])
            self.target_parts.append(target)
            self.target_lengths.append(target_lengths)
            self.origins += [(self.files.setdefault(r.file, len(self.files)), r.line) for r in records]
            self.n_tokens += int(target_lengths.sum())
        self.parts.append(flat)
        self.lengths.append(lengths)
        self.n_tokens += int(lengths.sum())
        self.n_records += len(records)

    def take(self) -> Shard:
        """The shard built so far; the builder starts a new one."""

        def documents(parts, lengths) -> Documents:
            tokens = np.concatenate(parts) if parts else np.zeros(0, self.dtype)
            ends = np.cumsum(np.concatenate(lengths)) if lengths else np.zeros(0, np.int64)
            return Documents(tokens, ends.astype(np.int64))

        shard = Shard(documents(self.parts, self.lengths))
        if self.kind == "parallel":
            shard.targets = documents(self.target_parts, self.target_lengths)
            shard.origins = np.array(self.origins, dtype=np.int64).reshape(-1, 2)
        self.reset()
        return shard

    @property
    def file_names(self) -> list[str]:
        return list(self.files)


def batched(records: Iterable[Record], size: int = ENCODE_BATCH) -> Iterator[list[Record]]:
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_records(records: Iterable[Record], tokenizer, kind: str, eos_id: int, name: str = "corpus") -> Corpus:
    """A one-shard corpus in memory: for data small enough to tokenize at the start of a run."""
    builder = ShardBuilder(tokenizer, kind, eos_id)
    for batch in batched(records):
        builder.add(batch)
    files = builder.file_names
    return Corpus(kind, [builder.take()], files, name)
