"""T5 span corruption (Raffel et al. 2020, §3.1.4 and §3.3.4).

15 % of the tokens, in spans of mean length 3, are each replaced in the source by one sentinel; the
target lists every sentinel followed by the tokens it hid. Spans never start at the first token.
Packed under `pack documents`, each document of a window is corrupted as a text of its own, with its
own sentinels from the first, and becomes a `source -> target` pair of its own in the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triform.objectives.base import Objective, Windows
from triform.objectives.batch import Batch


def random_segmentation(n_items: int, n_segments: int, generator) -> list[int]:
    """Split n_items into n_segments non-empty runs, uniformly over all such splits."""
    cuts = (torch.randperm(n_items - 1, generator=generator)[: n_segments - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, n_items]
    return [bounds[i + 1] - bounds[i] for i in range(n_segments)]


@dataclass(frozen=True)
class SpanOptions:
    noise_density: float = 0.15  # fraction of the tokens corrupted
    mean_span_length: float = 3.0


class SpanCorruption(Objective):
    name = "span"
    specialty = "restore"
    Options = SpanOptions
    tokenizer_kind = "unigram"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 < self.options.noise_density < 1.0:
            raise ValueError(f"span noise_density: expected a value in (0, 1), got {self.options.noise_density}")
        if self.options.mean_span_length < 1:
            raise ValueError(f"span mean_span_length: expected at least 1, got {self.options.mean_span_length}")

    def counts(self, n: int) -> tuple[int, int]:
        """(corrupted tokens, spans) of a text of n >= 2 tokens."""
        n_noise = min(max(round(n * self.options.noise_density), 1), n - 1)
        n_spans = min(max(round(n_noise / self.options.mean_span_length), 1), n - n_noise)
        return n_noise, n_spans

    def windows(self, max_len: int) -> Windows:
        """The longest text whose corrupted layout fits max_len, sentinels counted as they are placed:
        `source [SEP] target [EOS]` on a stack, `source [EOS]` and `[BOS] target` on an encoder-decoder;
        and whose spans have a sentinel each (a high noise density in short spans needs many)."""
        best = 2
        for n in range(2, 4 * max_len):
            n_noise, n_spans = self.counts(n)
            if self.specials.sentinels and n_spans > len(self.specials.sentinels):
                break
            if self.arch == "stack":
                fits = n + 2 * n_spans + 1 <= max_len
            else:
                fits = n - n_noise + n_spans + 1 <= max_len and 1 + n_noise + n_spans <= max_len
            if fits:
                best = n
        return Windows(best, best)

    def corrupt(self, sequence: list[int], generator) -> tuple[list[int], list[int]]:
        n = len(sequence)
        if n < 2:
            return list(sequence), []
        n_noise, n_spans = self.counts(n)
        sentinels = self.specials.sentinels
        if n_spans > len(sentinels):
            raise ValueError(
                f"span corruption of {n} tokens needs {n_spans} sentinel tokens; the tokenizer has {len(sentinels)}"
            )
        noise_lengths = random_segmentation(n_noise, n_spans, generator)
        keep_lengths = random_segmentation(n - n_noise, n_spans, generator)
        source, target, start = [], [], 0
        for span, (keep, noise) in enumerate(zip(keep_lengths, noise_lengths)):
            source += [*sequence[start : start + keep], sentinels[span]]
            start += keep
            target += [sentinels[span], *sequence[start : start + noise]]
            start += noise
        return source, target

    def prepare(self, examples, generator=None) -> Batch:
        return self.pairs_batch(examples, generator, self.corrupt)


def uncorrupt(source: list[int], target: list[int], sentinels: tuple[int, ...]) -> list[int]:
    """Put the target's spans back in place of the source's sentinels: the inverse of corruption."""
    position = {token: i for i, token in enumerate(sentinels)}
    spans: dict[int, list[int]] = {}
    current = None
    for token in target:
        if token in position:
            current = position[token]
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    text = []
    for token in source:
        text += spans.get(position[token], []) if token in position else [token]
    return text
