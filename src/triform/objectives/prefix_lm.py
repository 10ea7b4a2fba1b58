"""Prefix language modelling: read a prefix, predict the rest (Raffel et al. 2020, §3.3; UniLM)."""

from __future__ import annotations

from triform.objectives.base import Objective, random_split
from triform.objectives.batch import Batch


class PrefixLM(Objective):
    """Each text is split at a uniformly random point: the part before is the source, the rest the target.
    Packed under `pack documents`, each document of a window is split at a point of its own."""

    name = "prefix-lm"

    def prepare(self, examples, generator=None) -> Batch:
        return self.pairs_batch(examples, generator, random_split)
