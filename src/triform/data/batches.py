"""Examples and batch order: packed windows for language-model objectives, length-bucketed pairs
for seq2seq, and a deterministic order so that a batch is a function of (seed, step) alone.

That determinism is what makes a resumed run see exactly the batches an uninterrupted one would,
and a run on N processes see the same global batches as a run on one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from triform.data.corpus import Corpus
from triform.data.readers import DataError

TooLong = Literal["error", "skip", "truncate"]
BUCKET_SPAN = 64  # batches whose examples are sorted together by length (fairseq-style bucketing)


class WindowData:
    """Windows of `length` tokens cut from each shard's stream of [EOS]-separated documents.

    Consecutive windows overlap by `length - stride` tokens: a causal LM reads windows of
    max_len + 1 tokens with stride max_len, so that every token is predicted exactly once.
    """

    def __init__(
        self, corpus: Corpus, length: int, stride: int | None = None, eos_to: int | None = None, eos: int | None = None
    ):
        if length < 2:
            raise DataError(f"{corpus.name}: windows of {length} tokens are too short; raise model.max_len")
        self.corpus, self.length, self.stride = corpus, length, stride or length
        self.replace = (eos, eos_to) if eos_to is not None and eos != eos_to else None
        index = []
        for number, shard in enumerate(corpus.shards):
            starts = np.arange(0, shard.n_tokens - self.length + 1, self.stride, dtype=np.int64)
            index.append(np.stack([np.full_like(starts, number), starts], axis=1))
        self.index = np.concatenate(index) if index else np.zeros((0, 2), np.int64)
        if len(self.index) == 0:
            raise DataError(
                f"{corpus.name}: {corpus.n_tokens} tokens are fewer than one window of {self.length}; add text or "
                "lower model.max_len"
            )

    def __len__(self) -> int:
        return len(self.index)

    def keep(self, picks: np.ndarray) -> None:
        """Only the examples `picks` (indices into this data), in that order."""
        self.index = self.index[picks]

    def lengths(self) -> np.ndarray:
        return np.full(len(self), self.length)

    def example(self, i: int) -> list[int]:
        shard, start = self.index[i]
        window = np.asarray(self.corpus.shards[shard].documents.tokens[start : start + self.length], dtype=np.int64)
        if self.replace is not None:  # RoBERTa-style packing separates documents by [SEP] for masked LM
            window[window == self.replace[0]] = self.replace[1]
        return window.tolist()


class PairData:
    """(source, target) pairs whose laid-out lengths fit the model; longer ones per `too_long`.

    Encoder-decoder: `source [EOS]` and `[BOS] target` each fit max_len. Stack: `source [SEP] target`.
    """

    def __init__(self, corpus: Corpus, max_len: int, arch: str, too_long: TooLong = "error"):
        self.corpus, self.max_len, self.arch, self.too_long = corpus, max_len, arch, too_long
        index, lengths = [], []
        for number, shard in enumerate(corpus.shards):
            source, target = shard.documents.lengths(), shard.targets.lengths()
            fits = self.fits(source, target)
            if too_long == "error" and not fits.all():
                self.refuse(number, int(np.argmin(fits)), int(source[~fits][0]), int(target[~fits][0]))
            keep = np.nonzero(fits)[0] if too_long == "skip" else np.arange(len(source))
            index.append(np.stack([np.full_like(keep, number), keep], axis=1))
            lengths.append(np.minimum(source[keep] + target[keep], 2 * max_len))
        self.index = np.concatenate(index) if index else np.zeros((0, 2), np.int64)
        self.example_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        if len(self.index) == 0:
            raise DataError(f"{corpus.name}: no pair fits model.max_len {max_len}")

    def fits(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        if self.arch == "encoder-decoder":
            return (source + 1 <= self.max_len) & (target + 1 <= self.max_len)
        return source + 1 + target <= self.max_len

    def refuse(self, shard: int, document: int, source: int, target: int) -> None:
        origins = self.corpus.shards[shard].origins
        file_index, line = (int(v) for v in origins[document])
        where = (
            f"{self.corpus.files[file_index]}:{line}"
            if file_index < len(self.corpus.files)
            else f"{self.corpus.name}: pair {document}"
        )
        layout = (
            f"source {source} + target {target} tokens"
            if self.arch == "stack"
            else f"source {source}, target {target} tokens"
        )
        raise DataError(
            f"{where}: too long for model.max_len {self.max_len} ({layout}); set data.too_long to skip or truncate"
        )

    def __len__(self) -> int:
        return len(self.index)

    def keep(self, picks: np.ndarray) -> None:
        """Only the examples `picks` (indices into this data), in that order."""
        self.index, self.example_lengths = self.index[picks], self.example_lengths[picks]

    def lengths(self) -> np.ndarray:
        return self.example_lengths

    def example(self, i: int) -> tuple[list[int], list[int]]:
        shard_number, document = self.index[i]
        shard = self.corpus.shards[shard_number]
        source = np.asarray(shard.documents.document(document), dtype=np.int64).tolist()
        target = np.asarray(shard.targets.document(document), dtype=np.int64).tolist()
        if self.too_long == "truncate":
            source, target = self.truncate(source, target)
        return source, target

    def truncate(self, source: list[int], target: list[int]) -> tuple[list[int], list[int]]:
        budget = self.max_len - 1
        if self.arch == "encoder-decoder":
            return source[:budget], target[:budget]
        keep_source = min(len(source), max(budget // 2, budget - len(target)))
        return source[:keep_source], target[: budget - keep_source]


class BatchOrder:
    """Global batches of `batch_size` example indices; batch `step` depends only on (seed, step).

    Each epoch is a fresh permutation. With `bucket`, examples are sorted by length within spans of
    BUCKET_SPAN batches and the batches shuffled, so padding stays small (Vaswani et al. §5.1).
    """

    def __init__(self, data, batch_size: int, seed: int, *, bucket: bool = False, name: str = "data"):
        self.data, self.batch_size, self.seed, self.bucket = data, batch_size, seed, bucket
        self.steps_per_epoch = len(data) // batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"{name}: {len(data)} examples are fewer than one batch of {batch_size} (train.batch_size)")
        self._epoch, self._order = -1, np.zeros(0, np.int64)

    def order(self, epoch: int) -> np.ndarray:
        generator = np.random.default_rng([self.seed, epoch])
        order = generator.permutation(len(self.data))
        if not self.bucket:
            return order
        span = self.batch_size * BUCKET_SPAN
        lengths = self.data.lengths()
        chunks = [order[i : i + span] for i in range(0, len(order), span)]
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
        batches = order[: self.steps_per_epoch * self.batch_size].reshape(self.steps_per_epoch, self.batch_size)
        return batches[generator.permutation(len(batches))].reshape(-1)

    def indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self.order(epoch)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]

    def examples(self, step: int) -> list:
        return [self.data.example(int(i)) for i in self.indices(step)]


def evaluation_batches(data, batch_size: int, limit: int = 0) -> list[list[int]]:
    """Every example once, in batches (the last may be short), pairs sorted by length; `limit`
    > 0 keeps that many batches spread evenly over the data."""
    order = np.argsort(data.lengths(), kind="stable") if isinstance(data, PairData) else np.arange(len(data))
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if limit and len(batches) > limit:
        picks = np.linspace(0, len(batches) - 1, limit).round().astype(int)
        batches = [batches[i] for i in picks]
    return batches
