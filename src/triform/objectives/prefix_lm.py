"""Prefix language modelling: read a prefix, predict the rest (Raffel et al. 2020, §3.3; UniLM)."""

from __future__ import annotations

from triform.objectives.base import Objective, as_sequences, random_split
from triform.objectives.batch import Batch
from triform.objectives.layout import source_target_batch


class PrefixLM(Objective):
    """Each text is split at a uniformly random point: the part before is the source, the rest the target."""

    name = "prefix-lm"

    def prepare(self, examples, generator=None) -> Batch:
        pairs = [random_split(s, generator) for s in as_sequences(examples)]
        return source_target_batch(pairs, self.arch, self.pattern, self.specials)
