"""The objective interface: a pure transformation of token ids into a Batch, and a loss.

Objectives receive text as token ids without special tokens and add the ones their format needs.
They hold no state between batches; randomness comes from the `generator` passed to `prepare`, so
that a seeded run (and a resumed one) sees the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from triform.kernels.loss import cross_entropy
from triform.objectives.batch import IGNORE, Batch
from triform.objectives.compat import SOURCE_TARGET, check_pair
from triform.vocab import SpecialTokens


def as_sequences(examples: Tensor | Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(examples, Tensor):
        return examples.tolist()
    return [list(example) for example in examples]


class Objective:
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()  # special tokens of its own, beyond those of the layouts

    def __init__(
        self,
        specials: SpecialTokens,
        vocab_size: int,
        *,
        arch: str = "stack",
        pattern: str | None = None,
        label_smoothing: float = 0.0,
    ):
        self.pattern = check_pair(arch, self.name, pattern)  # refuse an impossible pair before any compute
        self.arch = arch
        # An encoder-decoder's decoder may start from a token of its own instead of [BOS] (T5 has no [BOS]).
        starts_without_bos = arch == "encoder-decoder" and specials.decoder_start is not None
        layout_needs = ("pad", "eos") + (() if starts_without_bos else ("bos",))
        layout_needs += ("sep",) if arch == "stack" and self.name in SOURCE_TARGET else ()
        specials.require(layout_needs + self.needs, f"the {self.name} objective")
        self.specials = specials
        self.vocab_size = vocab_size
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def prepare(self, examples, generator: torch.Generator | None = None) -> Batch:
        raise NotImplementedError

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Mean cross-entropy over predicted tokens; logits are (B, T, V), or (N, V) with sparse logits."""
        targets = batch.targets[batch.logits_at] if batch.sparse_logits else batch.targets
        return cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
        )

    def describe(self) -> str:
        return f"{self.arch} + {self.name} + {self.pattern}"


def random_split(sequence: list[int], generator: torch.Generator | None) -> tuple[list[int], list[int]]:
    """Split at a uniformly random point, leaving at least one token on each side when possible."""
    if len(sequence) < 2:
        return list(sequence), []
    point = int(torch.randint(1, len(sequence), (1,), generator=generator))
    return sequence[:point], sequence[point:]
