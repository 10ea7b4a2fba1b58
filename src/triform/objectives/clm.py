"""Causal language modelling: predict each token from the ones before it (Radford et al. 2018)."""

from __future__ import annotations

from triform.objectives.base import Objective, as_sequences, random_split
from triform.objectives.batch import Batch, pad, pad_targets
from triform.objectives.layout import source_target_batch


class CausalLM(Objective):
    """On a stack, each text becomes ``[BOS] text [EOS]`` and every token is predicted.

    With ``packed=True`` each row is already a window of a token stream in which the data pipeline
    separated documents by [EOS] (GPT-2's format), and is used as it is. On an encoder-decoder the
    encoder must read something, so each text is split at a random point and the decoder predicts
    the continuation: there, clm and prefix-lm are the same objective.
    """

    name = "clm"

    def __init__(self, *args, packed: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.packed = packed

    def prepare(self, examples, generator=None) -> Batch:
        sequences = as_sequences(examples)
        if self.arch == "encoder-decoder":
            return source_target_batch(
                [random_split(s, generator) for s in sequences], self.arch, self.pattern, self.specials
            )
        if not self.packed:
            sequences = [[self.specials.bos] + s + [self.specials.eos] for s in sequences]
        ids, padding_mask = pad([s[:-1] for s in sequences], self.specials.pad)
        targets = pad_targets([s[1:] for s in sequences], ids.shape[1])
        return Batch(ids, targets, self.pattern, padding_mask)
