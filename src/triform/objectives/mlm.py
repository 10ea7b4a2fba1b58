"""Masked language modelling (Devlin et al. 2019, §3.1 and appendix A.1).

Of each text, 15 % of the tokens are chosen (at least one; the exact count per sequence, as in BERT's
own data pipeline); of those, 80 % become [MASK], 10 % a random token and 10 % stay as they are. Only
the chosen positions are predicted, and the model computes logits only there.
"""

from __future__ import annotations

import torch

from triform.objectives.base import Objective, as_sequences
from triform.objectives.batch import IGNORE, Batch, pad, pad_targets
from triform.objectives.layout import source_target_batch


class MaskedLM(Objective):
    name = "mlm"
    needs = ("cls", "sep", "mask")

    def __init__(
        self,
        *args,
        rate: float = 0.15,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
        whole_word: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if not 0.0 < rate < 1.0:
            raise ValueError(f"mlm rate: expected a value in (0, 1), got {rate}")
        if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1.0:
            raise ValueError("mlm mask_fraction and random_fraction must be non-negative and sum to at most 1")
        self.rate, self.mask_fraction, self.random_fraction = rate, mask_fraction, random_fraction
        self.whole_word = whole_word
        special = self.specials.all_ids
        self.replacements = torch.tensor([i for i in range(self.vocab_size) if i not in special])

    def prepare(self, examples, generator=None, word_starts: list[list[bool]] | None = None) -> Batch:
        """`word_starts[b][i]` is True where token i of text b begins a word (whole-word masking)."""
        sequences = as_sequences(examples)
        if self.whole_word and word_starts is None:
            raise ValueError("whole-word masking needs word_starts for every text")
        corrupted, originals = [], []
        for index, sequence in enumerate(sequences):
            starts = word_starts[index] if word_starts is not None else None
            corrupted.append(self.corrupt(sequence, starts, generator))
            originals.append(sequence)

        if self.arch == "encoder-decoder":
            return source_target_batch(
                [(c, o) for (c, _), o in zip(corrupted, originals)], self.arch, self.pattern, self.specials
            )
        cls, sep = self.specials.cls, self.specials.sep
        ids, padding_mask = pad([[cls] + c + [sep] for c, _ in corrupted], self.specials.pad)
        targets = pad_targets([[IGNORE] + t + [IGNORE] for _, t in corrupted], ids.shape[1])
        prefix_lengths = None
        if self.pattern == "prefix":
            lengths = torch.tensor([len(c) + 2 for c, _ in corrupted])
            prefix_lengths = 1 + (torch.rand(len(lengths), generator=generator) * lengths).long()
        return Batch(ids, targets, self.pattern, padding_mask, prefix_lengths=prefix_lengths, sparse_logits=True)

    def choose(self, sequence: list[int], word_starts: list[bool] | None, generator) -> list[int]:
        """Positions to predict: round(rate · n) of the non-special tokens, whole words when asked."""
        special = self.specials.all_ids
        candidates = [i for i, token in enumerate(sequence) if token not in special]
        if not candidates:
            return []
        budget = max(1, round(self.rate * len(candidates)))
        if word_starts is None:
            words = [[i] for i in candidates]
        else:
            words = []
            for i in candidates:
                if word_starts[i] or not words:
                    words.append([i])
                else:
                    words[-1].append(i)
        chosen: list[int] = []
        for w in torch.randperm(len(words), generator=generator).tolist():
            # As BERT's whole-word masking: skip a word that would overshoot the budget.
            if len(chosen) + len(words[w]) > budget:
                continue
            chosen.extend(words[w])
            if len(chosen) == budget:
                break
        return sorted(chosen)

    def corrupt(self, sequence: list[int], word_starts, generator) -> tuple[list[int], list[int]]:
        """Return (input tokens, targets with IGNORE at unchosen positions), same length as the text."""
        chosen = self.choose(sequence, word_starts, generator)
        inputs, targets = list(sequence), [IGNORE] * len(sequence)
        draws = torch.rand(len(chosen), generator=generator).tolist()
        randoms = torch.randint(len(self.replacements), (len(chosen),), generator=generator).tolist()
        for position, draw, random_index in zip(chosen, draws, randoms):
            targets[position] = sequence[position]
            if draw < self.mask_fraction:
                inputs[position] = self.specials.mask
            elif draw < self.mask_fraction + self.random_fraction:
                inputs[position] = int(self.replacements[random_index])
        return inputs, targets
