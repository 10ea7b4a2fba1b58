"""How a prompt is laid out for the model, the same way the objective laid out its training data.

- A stack trained with `clm` continues ``[BOS] prompt`` under the causal pattern (objectives/clm.py).
- A stack trained source -> target (`seq2seq`, `prefix-lm`, `span`, `denoise`) reads ``source [SEP]``
  (the prefix, under the prefix pattern by default) and writes the target after it
  (objectives/layout.py); when the model has segment embeddings, the target is segment 1.
- An encoder-decoder encodes ``source [EOS]``; its decoder starts from [BOS] (or the vocabulary's own
  decoder start token: T5's and Marian's padding, BART's end of sequence).

A model trained with `mlm` on a stack does not continue text: it fills masks (fill_mask.py,
mask_predict.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from triform.errors import TriformError
from triform.objectives.compat import OBJECTIVES, SOURCE_TARGET, check_pair
from triform.vocab import SpecialTokens

CONTINUE, SOURCE_TARGET_KIND = "continue", "source-target"


@dataclass(frozen=True)
class Layout:
    arch: str  # "stack" or "encoder-decoder"
    kind: str  # "continue" (clm on a stack) or "source-target"
    pattern: str  # self-attention pattern of the stack, or of the decoder
    specials: SpecialTokens

    def frame(self, prompt: list[int]) -> list[int]:
        """Token ids of a prompt (no special tokens) -> what the stack or the encoder reads first."""
        s = self.specials
        if self.arch == "encoder-decoder":
            return list(prompt) + [s.eos]
        if self.kind == CONTINUE:
            return [s.bos] + list(prompt)
        return list(prompt) + [s.sep]

    def room(self, prompt: list[int], max_len: int) -> int:
        """How many tokens may follow the prompt within the model's max_len; below 1, it is too long.
        An encoder-decoder's source has max_len positions of its own, its decoder another max_len."""
        n_framed = len(prompt) + 1  # one special token in every layout
        if self.arch == "encoder-decoder":
            return max_len - 1 if n_framed <= max_len else 0  # the decoder's [BOS] takes a position
        return max_len - n_framed

    def fit(self, prompt: list[int], max_len: int) -> list[int]:
        """Shorten a prompt that leaves no room: a source keeps its beginning, a text to continue its end."""
        if self.room(prompt, max_len) >= 1:
            return list(prompt)
        keep = max_len - 1 if self.arch == "encoder-decoder" else max_len - 2
        if self.kind == CONTINUE:
            return list(prompt[len(prompt) - keep :]) if keep > 0 else []
        return list(prompt[:keep])

    def history(self, framed: list[int]) -> list[int]:
        """The sequence the new tokens continue, as penalties see it: the framed text to continue,
        or the target's start token ([SEP] on a stack, the decoder's start token on an
        encoder-decoder) as `transformers` counts a decoder's input."""
        if self.kind == CONTINUE:
            return list(framed)
        return [self.specials.sep] if self.arch == "stack" else [self.specials.decoder_start_id]

    @property
    def segments(self) -> bool:
        """Whether generated tokens belong to the second segment (source -> target on a stack)."""
        return self.arch == "stack" and self.kind == SOURCE_TARGET_KIND


class PromptTooLong(TriformError):
    def __init__(self, index: int, n_tokens: int, max_len: int):
        self.index = index
        self.reason = (
            f"{n_tokens} tokens leave no room to generate within the model's max_len {max_len} "
            "(shorten it, or truncate)"
        )
        super().__init__(f"prompt {index}: {self.reason}")


def resolve_layout(
    arch: str, specials: SpecialTokens, objective: str | None = None, pattern: str | None = None
) -> Layout:
    """The layout of a model trained with `objective` under `pattern`; by default a stack is a
    causal language model and an encoder-decoder a seq2seq model."""
    if objective is None:
        objective = "clm" if arch == "stack" else "seq2seq"
    if objective not in OBJECTIVES:
        raise TriformError(f"objective: unknown {objective!r}; expected one of {list(OBJECTIVES)}")
    pattern = check_pair(arch, objective, pattern)
    if arch == "stack" and objective == "mlm":
        raise TriformError(
            "this model was trained with mlm: it fills masks rather than continuing text; "
            "use fill-mask, or mask-predict to generate a sequence of a given length"
        )
    if arch == "encoder-decoder":
        kind = SOURCE_TARGET_KIND
        specials.require(("eos",), "generation with an encoder-decoder")
        if specials.decoder_start_id is None:
            raise TriformError("generation with an encoder-decoder needs a bos token (or a decoder start token)")
    elif objective in SOURCE_TARGET:
        kind = SOURCE_TARGET_KIND
        specials.require(("sep",), f"generation with a stack trained with {objective}")
    else:
        kind = CONTINUE
        specials.require(("bos",), "generation with a stack trained with clm")
    return Layout(arch, kind, pattern, specials)
