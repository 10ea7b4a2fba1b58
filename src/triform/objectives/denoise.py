"""BART denoising: sentence permutation, then text infilling (Lewis et al. 2020, §2.2 and §5.1).

Sentences are shuffled; then spans covering 30 % of the tokens, with lengths drawn from Poisson(3),
are each replaced by a single [MASK] (a span of length 0 inserts one). The decoder reconstructs the
original text.
"""

from __future__ import annotations

import torch

from triform.objectives.base import Objective, as_sequences
from triform.objectives.batch import Batch
from triform.objectives.layout import source_target_batch


class Denoise(Objective):
    name = "denoise"
    needs = ("mask",)

    def __init__(
        self,
        *args,
        mask_ratio: float = 0.3,
        poisson_lambda: float = 3.0,
        permute_sentences: bool = True,
        sentence_end_ids: tuple[int, ...] = (),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"denoise mask_ratio: expected a value in [0, 1), got {mask_ratio}")
        self.mask_ratio, self.poisson_lambda = mask_ratio, poisson_lambda
        self.permute_sentences = permute_sentences
        self.sentence_end_ids = frozenset(sentence_end_ids)  # e.g. the ids of ".", "!", "?"

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
        n_masked = round(len(sequence) * self.mask_ratio)
        if n_masked == 0:
            return list(sequence)
        lengths: list[int] = []
        while sum(lengths) < n_masked:
            draws = torch.poisson(torch.full((max(4, n_masked // 2),), self.poisson_lambda), generator=generator)
            lengths += draws.long().tolist()
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
            source += sequence[start : start + gap] + [self.specials.mask]
            start += gap + span
        return source + sequence[start:]

    def corrupt(self, sequence: list[int], generator) -> list[int]:
        permuted = self.permute(sequence, generator) if self.permute_sentences else list(sequence)
        return self.infill(permuted, generator)

    def prepare(self, examples, generator=None) -> Batch:
        pairs = [(self.corrupt(s, generator), s) for s in as_sequences(examples)]
        return source_target_batch(pairs, self.arch, self.pattern, self.specials)
