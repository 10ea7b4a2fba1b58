"""What `triform compare` trains: every allowed architecture x objective pair that pretrains on plain
text, plus a model with no pretraining, each given the same compute.

Compute is counted as tokens x parameters: each token processed in training times the
non-embedding parameters it passes through (Kaplan et al. 2020 count C = 6 N D with the same N).
On a stack every token passes through the whole stack; on an encoder-decoder a source token passes
through the encoder and a target token through the decoder, so an encoder-decoder with L + L layers
costs about what a stack of L layers costs per token, with twice the parameters — the comparison
of the T5 paper's Table 2 (Raffel et al. 2020, §3.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from triform.errors import TriformError
from triform.objectives.compat import ALLOWED, allowed_triples

PRETRAINING = ("clm", "mlm", "span", "denoise", "prefix-lm")  # seq2seq needs pairs: it is a task here
NONE = "none"  # the no-pretraining baseline: the fine-tuning alone
TASKS = ("next-token", "masked-token", "restore")
TASK_OBJECTIVE = {"next-token": "clm", "masked-token": "mlm", "restore": "seq2seq"}


@dataclass(frozen=True)
class Entry:
    arch: str
    objective: str  # a pretraining objective, or "none"
    pattern: str | None

    @property
    def label(self) -> str:
        if self.objective == NONE:
            return f"{self.arch}, no pretraining"
        return f"{self.arch} + {self.objective} + {self.pattern}"

    @property
    def key(self) -> str:
        return f"{self.arch}-{self.objective}" + (f"-{self.pattern}" if self.pattern else "")


def entries(patterns: str = "default", pairs: list[str] | None = None, baseline: bool = True) -> list[Entry]:
    """The pairs to pretrain, at their default pattern or every allowed one; `pairs` keeps only
    those named `arch:objective` (or `arch:objective:pattern`)."""
    if patterns not in ("default", "all"):
        raise TriformError(f"--patterns: expected default or all, got {patterns!r}")
    chosen = []
    for arch, objective, pattern in allowed_triples():
        if objective not in PRETRAINING:
            continue
        entry = Entry(arch, objective, pattern)
        if patterns == "all" or is_default(entry):
            chosen.append(entry)
    if pairs:
        wanted = [p.split(":") for p in pairs]
        for parts in wanted:
            if len(parts) not in (2, 3) or not any(matches(e, parts) for e in all_entries()):
                raise TriformError(
                    f"--pairs: {':'.join(parts)!r} names no allowed pretraining pair; expected "
                    "arch:objective or arch:objective:pattern, e.g. stack:clm or encoder-decoder:span"
                )
        chosen = [
            e
            for e in all_entries()
            if any(matches(e, parts) and (len(parts) == 3 or patterns == "all" or is_default(e)) for parts in wanted)
        ]
    if baseline:
        chosen += [
            Entry(arch, NONE, None) for arch in ("stack", "encoder-decoder") if any(e.arch == arch for e in chosen)
        ]
    return chosen


def is_default(entry: Entry) -> bool:
    return entry.pattern == next(iter(ALLOWED[(entry.arch, entry.objective)]))


def all_entries() -> list[Entry]:
    return [Entry(a, o, p) for a, o, p in allowed_triples() if o in PRETRAINING]


def matches(entry: Entry, parts: list[str]) -> bool:
    return [entry.arch, entry.objective, entry.pattern][: len(parts)] == parts


def finetune_pattern(arch: str, task: str) -> str:
    """The pattern each task trains under: the default of its objective on the architecture."""
    return next(iter(ALLOWED[(arch, TASK_OBJECTIVE[task])]))
