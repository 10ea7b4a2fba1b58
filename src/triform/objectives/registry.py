"""Every objective by name, and `make_objective`, which refuses an impossible pair before any compute."""

from __future__ import annotations

import dataclasses
import inspect

from triform.errors import IncompatiblePair
from triform.objectives.base import Objective
from triform.objectives.clm import CausalLM
from triform.objectives.compat import OBJECTIVES
from triform.objectives.denoise import Denoise
from triform.objectives.electra import Electra
from triform.objectives.mixture import Mixture
from triform.objectives.mlm import MaskedLM
from triform.objectives.prefix_lm import PrefixLM
from triform.objectives.seq2seq import Seq2Seq
from triform.objectives.span import SpanCorruption
from triform.objectives.ul2 import UL2, UniLM
from triform.vocab import SpecialTokens

OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (CausalLM, MaskedLM, SpanCorruption, Denoise, PrefixLM, Seq2Seq, Electra)
}
assert tuple(OBJECTIVE_CLASSES) == OBJECTIVES, "the compatibility table names every objective"
# Mixtures draw one of the objectives above for each micro-batch, each part checked by the table.
OBJECTIVE_CLASSES.update({cls.name: cls for cls in (Mixture, UL2, UniLM)})
Mixture.catalog = OBJECTIVE_CLASSES


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVE_CLASSES:
        raise IncompatiblePair(f"unknown objective {name!r}; expected one of {list(OBJECTIVE_CLASSES)}")
    return OBJECTIVE_CLASSES[name]


def option_names(name: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(objective_class(name).Options))


def make_objective(
    name: str, specials: SpecialTokens, vocab_size: int, *, arch: str = "stack", pattern: str | None = None, **values
) -> Objective:
    """Build an objective for an architecture, refusing an impossible pair before any compute.

    Keyword values are the objective's options (`rate=0.2` for mlm; or `options=MaskedLMOptions(...)`)
    and the constructor's own arguments (`label_smoothing`, `packed`, `tokenizer`, ...)."""
    cls = objective_class(name)
    own = set(option_names(name))
    chosen = {key: values.pop(key) for key in list(values) if key in own}
    accepted = set(inspect.signature(Objective.__init__).parameters) | set(inspect.signature(cls.__init__).parameters)
    unknown = sorted(set(values) - accepted)
    if unknown:
        listed = ", ".join(sorted(own)) or "none"
        raise TypeError(f"the {name} objective has no option {unknown[0]!r} (its options: {listed})")
    if chosen:
        if values.get("options") is not None:
            raise TypeError(f"{name}: give the options as keywords or as `options`, not both")
        values["options"] = cls.options_from(chosen)
    cls.pattern_on(arch, pattern, values.get("options") or cls.Options())  # refused before anything is built
    return cls(specials, vocab_size, arch=arch, pattern=pattern, **values)
