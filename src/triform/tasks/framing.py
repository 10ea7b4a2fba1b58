"""How a task's texts become one input sequence, on each kind of pretrained body.

A body is read one of three ways, and each has its framing and its pooled position:

- a stack read bidirectionally (BERT, Devlin et al. 2019 §3): ``[CLS] a [SEP] b [SEP]`` with segment
  ids 0 / 1; the sequence is summarised by the first token, [CLS];
- a stack read causally (GPT-1, Radford et al. 2018 §3.3): ``[BOS] a [SEP] b [EOS]`` (start,
  delimiter and extract tokens); only the last real token has seen everything, so it summarises.
  A vocabulary without a delimiter (GPT-2's has only <|endoftext|>) delimits with [EOS];
- an encoder-decoder (BART, Lewis et al. 2020 §3.1): the same ``[BOS] a [SEP] b [EOS]`` is fed to
  the encoder and to the decoder, and the decoder's last real token summarises.

A body pretrained with mode tokens (UL2, Tay et al. 2022 §3.1.3) reads its mode token first, as it did
in pretraining: the recipe's part for the task names it (`mode`).
"""

from __future__ import annotations

from dataclasses import dataclass

from triform.errors import ConfigError
from triform.vocab import SpecialTokens

STACK_PATTERNS = ("bidirectional", "causal", "prefix")  # prefix: text-to-text only (see text2text.py)


@dataclass(frozen=True)
class Sequence:
    ids: list[int]
    token_types: list[int]
    starts: list[int]  # index in `ids` of the first token of each part


@dataclass(frozen=True)
class Framing:
    arch: str
    pattern: str  # the stack's pattern; "causal" (the decoder's) on an encoder-decoder
    specials: SpecialTokens
    max_len: int
    mode: int | None = None  # the mode token read before everything else; None: none

    def __post_init__(self):
        if self.arch == "encoder-decoder" and self.pattern != "causal":
            raise ConfigError(f"pattern: an encoder-decoder is read through its causal decoder, got {self.pattern!r}")
        if self.arch == "stack" and self.pattern not in STACK_PATTERNS:
            raise ConfigError(f"pattern: a task reads a stack with one of {list(STACK_PATTERNS)}, got {self.pattern!r}")
        self.specials.require(("pad",) + (("cls", "sep") if self.pools_first else ("bos", "eos")), "a task framing")
        if self.max_len < 8:
            raise ConfigError(f"max_len: a task input needs at least 8 tokens, got {self.max_len}")

    @property
    def pools_first(self) -> bool:
        """True where the first token summarises the sequence; otherwise the last real token does."""
        return self.arch == "stack" and self.pattern == "bidirectional"

    def markers(self) -> tuple[int, int, int]:
        """(start, delimiter, end) token ids."""
        s = self.specials
        return (s.cls, s.sep, s.sep) if self.pools_first else (s.bos, s.eos if s.sep is None else s.sep, s.eos)

    def room(self, n_parts: int) -> int:
        """How many text tokens fit beside the markers of `n_parts` parts."""
        return self.max_len - n_parts - 1 - (self.mode is not None)

    def join(self, *parts: list[int]) -> Sequence:
        """One or two parts, truncated longest-first to fit max_len, laid out with their markers."""
        parts = truncate_longest_first([list(p) for p in parts], self.room(len(parts)))
        start, delimiter, end = self.markers()
        ids, token_types, starts = [*self.lead, start], [0] * (len(self.lead) + 1), []
        for index, part in enumerate(parts):
            starts.append(len(ids))
            closing = end if index == len(parts) - 1 else delimiter
            ids += part + [closing]
            token_types += [min(index, 1)] * (len(part) + 1)
        return Sequence(ids, token_types, starts)

    def strip(self, ids: list[int]) -> list[int]:
        """The text tokens of a laid-out sequence: everything between the start and end markers."""
        return ids[1 + len(self.lead) : -1]

    @property
    def lead(self) -> list[int]:
        """What comes before the start marker: the mode token, when the body read one."""
        return [] if self.mode is None else [self.mode]


def truncate_longest_first(parts: list[list[int]], room: int) -> list[list[int]]:
    """Drop tokens from the end of the longest part until all fit in `room` (BERT's run_classifier
    drops one token at a time; cutting the longest part down to the next longest at once is the same)."""
    lengths = [len(p) for p in parts]
    excess = sum(lengths) - room
    while excess > 0:
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        runner_up = sorted(lengths)[-2] if len(lengths) > 1 else 0
        cut = min(excess, max(1, lengths[longest] - runner_up))
        lengths[longest] -= cut
        excess -= cut
    return [list(p[:n]) for p, n in zip(parts, lengths)]
