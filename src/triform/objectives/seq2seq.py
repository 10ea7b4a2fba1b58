"""Supervised sequence-to-sequence: source -> target with teacher forcing (Vaswani et al. 2017)."""

from __future__ import annotations

from triform.objectives.base import Objective
from triform.objectives.batch import Batch
from triform.objectives.layout import source_target_batch


class Seq2Seq(Objective):
    """Examples are (source ids, target ids) pairs. Label smoothing (0.1 in Vaswani §5.4) is set
    through `label_smoothing`. On a stack the source is a bidirectional prefix (UniLM)."""

    name = "seq2seq"
    reads_pairs = True

    @classmethod
    def metrics_on(cls, arch: str) -> tuple[str, ...]:
        return ("bleu_chrf",)  # of greedy decoding (or beam search) against the references

    def prepare(self, examples, generator=None) -> Batch:
        pairs = []
        for index, example in enumerate(examples):
            if len(example) != 2:
                raise ValueError(f"seq2seq example {index}: expected a (source, target) pair, got {len(example)} items")
            pairs.append((list(example[0]), list(example[1])))
        return source_target_batch(pairs, self.arch, self.pattern, self.specials)
