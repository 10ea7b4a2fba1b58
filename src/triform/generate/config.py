"""The decoding options, validated once, shared by the Python API and the CLI."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from triform.errors import ConfigError
from triform.precision import PRECISIONS

# Tokens a target may have beyond max_length_factor x its source's: a one-word source may well have a
# translation of several tokens (a German compound split by the tokenizer, an article added).
TARGET_SLACK = 10


@dataclass(frozen=True)
class GenerationConfig:
    """How to choose each next token and when to stop.

    Greedy decoding by default; `do_sample=True` samples, `num_beams > 1` runs beam search.
    Penalties (repetition, no-repeat-n-gram, min_new_tokens) apply to every strategy; temperature,
    top-k, top-p and min-p shape the distribution that sampling draws from.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0  # [EOS] is forbidden before this many tokens
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off (Holtzman et al. 2020)
    min_p: float = 0.0  # 0.0: off (Nguyen et al. 2024)
    num_beams: int = 1
    length_penalty: float = 0.6  # alpha of Wu et al. 2016, 0.6 as in Vaswani et al. 2017 §6.1
    early_stopping: bool = True  # beam search stops once num_beams hypotheses are finished
    num_return_sequences: int = 1  # samples per prompt, or the n best beams
    repetition_penalty: float = 1.0  # 1.0: off (Keskar et al. 2019)
    no_repeat_ngram_size: int = 0  # 0: off
    stop: tuple[str, ...] = ()  # generation ends when the text contains one; the text is cut before it
    seed: int | None = None  # None: drawn from torch's global generator
    use_cache: bool = True  # False re-runs the whole sequence at every step (for comparison only)
    # torch.compile the cached decoding step (generate/compiled.py): fewer operators a step, after a
    # compile of tens of seconds on a small CPU, once per process and architecture.
    compile: bool = False
    precision: str = "auto"  # auto: bf16 autocast where the hardware has native bf16, fp32 elsewhere
    # A target of at most factor x source tokens + TARGET_SLACK (Marian's --max-length-factor): an
    # undertrained model would otherwise fill a short line's budget with repeated tokens. None: off.
    max_length_factor: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        self.validate()

    def validate(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(f"generation.{name}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("min_new_tokens", "top_k", "no_repeat_ngram_size"):
            value = getattr(self, name)
            check(name, isinstance(value, int) and not isinstance(value, bool) and value >= 0, "an integer >= 0")
        for name in ("max_new_tokens", "num_beams", "num_return_sequences"):
            value = getattr(self, name)
            check(name, isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1")
        check("temperature", self.temperature > 0, "a positive number (use do_sample=False for greedy)")
        check("top_p", 0.0 < self.top_p <= 1.0, "a number in (0, 1]")
        check("min_p", 0.0 <= self.min_p < 1.0, "a number in [0, 1)")
        check("repetition_penalty", self.repetition_penalty > 0, "a positive number (1.0 is off)")
        check("stop", all(isinstance(s, str) and s for s in self.stop), "non-empty strings")
        check("precision", self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}")
        factor = self.max_length_factor
        check(
            "max_length_factor",
            factor is None or (isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 0),
            "a positive number, or None (off)",
        )
        check(
            "min_new_tokens",
            self.min_new_tokens <= self.max_new_tokens,
            f"at most max_new_tokens ({self.max_new_tokens})",
        )
        if self.num_beams > 1:
            check("do_sample", not self.do_sample, "false with num_beams > 1 (beam search is deterministic)")
            check(
                "num_return_sequences",
                self.num_return_sequences <= self.num_beams,
                f"at most num_beams ({self.num_beams})",
            )
        elif not self.do_sample:
            check("num_return_sequences", self.num_return_sequences == 1, "1 for greedy decoding (sample or use beams)")

    def target_limit(self, n_source: int) -> int:
        """Most new tokens for a target whose source has `n_source` tokens."""
        if self.max_length_factor is None:
            return self.max_new_tokens
        return min(self.max_new_tokens, math.ceil(self.max_length_factor * n_source) + TARGET_SLACK)

    @property
    def strategy(self) -> str:
        if self.num_beams > 1:
            return "beam"
        return "sample" if self.do_sample else "greedy"

    def replace(self, **changes) -> GenerationConfig:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"generation: unknown option {unknown[0]!r}")
        return dataclasses.replace(self, **changes)
