"""Training objectives: each turns token ids into (inputs, pattern, targets) and scores logits."""

from __future__ import annotations

from triform.objectives.base import Objective
from triform.objectives.batch import IGNORE, Batch
from triform.objectives.clm import CausalLM
from triform.objectives.compat import ALLOWED, check_pair
from triform.objectives.denoise import Denoise
from triform.objectives.mlm import MaskedLM
from triform.objectives.prefix_lm import PrefixLM
from triform.objectives.seq2seq import Seq2Seq
from triform.objectives.span import SpanCorruption
from triform.vocab import SpecialTokens

OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (CausalLM, MaskedLM, SpanCorruption, Denoise, PrefixLM, Seq2Seq)
}


def make_objective(
    name: str, specials: SpecialTokens, vocab_size: int, *, arch: str = "stack", pattern: str | None = None, **options
) -> Objective:
    """Build an objective for an architecture, refusing an impossible pair before any compute."""
    check_pair(arch, name, pattern)
    return OBJECTIVE_CLASSES[name](specials, vocab_size, arch=arch, pattern=pattern, **options)


__all__ = ["ALLOWED", "IGNORE", "Batch", "Objective", "OBJECTIVE_CLASSES", "check_pair", "make_objective"]
