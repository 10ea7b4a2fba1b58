"""BART denoising: sentence permutation, then text infilling (Lewis et al. 2020, §2.2 and §5.1).

Sentences are shuffled; then spans covering 30 % of the tokens, with lengths drawn from Poisson(3),
are each replaced by a single [MASK] (a span of length 0 inserts one). The decoder reconstructs the
original text. Packed under `pack documents`, each document of a window is corrupted and restored on
its own: sentences are shuffled within a document, never across two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triform.objectives.base import Objective, Windows
from triform.objectives.batch import Batch
from triform.vocab import sentence_end_ids as vocabulary_sentence_ends


@dataclass(frozen=True)
class DenoiseOptions:
    mask_ratio: float = 0.3  # fraction of the tokens hidden by infilling
    poisson_lambda: float = 3.0  # mean span length
    permute_sentences: bool = True


class Denoise(Objective):
    name = "denoise"
    specialty = "restore"
    Options = DenoiseOptions
    needs = ("mask",)

    def __init__(self, *args, sentence_end_ids: tuple[int, ...] | None = None, **kwargs):
        """`sentence_end_ids` (e.g. the ids of ".", "!", "?") default to those of the tokenizer."""
        super().__init__(*args, **kwargs)
        if not 0.0 <= self.options.mask_ratio < 1.0:
            raise ValueError(f"denoise mask_ratio: expected a value in [0, 1), got {self.options.mask_ratio}")
        if sentence_end_ids is None:
            sentence_end_ids = vocabulary_sentence_ends(self.tokenizer) if self.tokenizer is not None else ()
        self.sentence_end_ids = frozenset(sentence_end_ids)

    def windows(self, max_len: int) -> Windows:
        if self.arch == "stack":  # corrupted text [SEP] original: the corruption shortens the text
            length = (max_len - 1) // 2
            return Windows(length, length)
        return super().windows(max_len)

    def permute(self, sequence: list[int], generator) -> list[int]:
        sentences, current = [], []
        for token in sequence:
            current.append(token)
            if token in self.sentence_end_ids:
                sentences.append(current)
                current = []
        if current:
            sentences.append(current)
        order = torch.randperm(len(sentences), generator=generator).tolist()
        return [token for i in order for token in sentences[i]]

    def infill(self, sequence: list[int], generator) -> list[int]:
        n_masked = round(len(sequence) * self.options.mask_ratio)
        if n_masked == 0:
            return list(sequence)
        lengths: list[int] = []
        while sum(lengths) < n_masked:
            rates = torch.full((max(4, n_masked // 2),), self.options.poisson_lambda)
            lengths += torch.poisson(rates, generator=generator).long().tolist()
        total, spans = 0, []
        for length in lengths:
            if total >= n_masked:
                break
            spans.append(min(length, n_masked - total))
            total += spans[-1]
        # Place the spans among the kept tokens: k spans cut the kept run into k + 1 gaps, any of them empty.
        n_kept = len(sequence) - n_masked
        cuts = torch.randint(0, n_kept + 1, (len(spans),), generator=generator).sort().values.tolist()
        gaps = [b - a for a, b in zip([0, *cuts], [*cuts, n_kept])]
        source, start = [], 0
        for gap, span in zip(gaps, spans):
            source += [*sequence[start : start + gap], self.specials.mask]
            start += gap + span
        return source + sequence[start:]

    def corrupt(self, sequence: list[int], generator) -> list[int]:
        permuted = self.permute(sequence, generator) if self.options.permute_sentences else list(sequence)
        return self.infill(permuted, generator)

    def prepare(self, examples, generator=None) -> Batch:
        return self.pairs_batch(examples, generator, lambda text, g: (self.corrupt(text, g), text))
