"""Two named mixtures: UL2's mixture of denoisers and UniLM's four language models on one stack.

UL2 (Tay et al. 2022, §3.1.2 "Mixture of Denoisers", and the final objective it configures): seven
denoisers, drawn here with equal probability. The paper's own share of each denoiser is not taken
from its text; the same parts with other weights are an `--objective.mix` (each part's span options
and mode):

- R, regular span corruption as T5's: mean span 3 at 15 %, and mean span 8 at 15 %;
- S, sequential denoising: a prefix LM, the text split at a random point;
- X, extreme denoising: mean span 3 at 50 %, mean span 8 at 50 %, mean span 64 at 15 %, and mean
  span 64 at 50 %.

Each paradigm has its mode token (§3.1.3), on by default: [NLU] for R, [S2S] for S, [NLG] for X.
On a stack every denoiser reads its source as a bidirectional prefix (the paper's decoder-only
UL2 is a prefix LM); on an encoder-decoder, the encoder reads it.

UniLM (Dong et al. 2019, §2.3): within one stack, 1/3 of the batches bidirectional LM, 1/3 sequence-to
-sequence LM, 1/6 left-to-right and 1/6 right-to-left LM. UniLM trains all four as cloze tasks; here the
bidirectional and right-to-left ones are masked LM under those patterns (mlm's 15 %, 80/10/10, without
UniLM's n-gram masking), and the left-to-right and sequence-to-sequence ones their next-token forms,
clm and prefix LM, which see the same context (the left, or the source and the target's left) and let
the model generate token by token. It has no mode tokens by default (UniLM tells its objectives apart
by their masks alone).
"""

from __future__ import annotations

from dataclasses import dataclass

from triform.objectives.mixture import Mixture, Part


def denoiser(label: str, mean: float, density: float, mode: str) -> Part:
    return Part("span", 1.0, options={"mean_span_length": mean, "noise_density": density}, mode=mode, label=label)


DENOISERS = (
    denoiser("r-mean3-15", 3.0, 0.15, "nlu"),
    denoiser("r-mean8-15", 8.0, 0.15, "nlu"),
    Part("prefix-lm", 1.0, mode="s2s", label="s-prefix"),
    denoiser("x-mean3-50", 3.0, 0.50, "nlg"),
    denoiser("x-mean8-50", 8.0, 0.50, "nlg"),
    denoiser("x-mean64-15", 64.0, 0.15, "nlg"),
    denoiser("x-mean64-50", 64.0, 0.50, "nlg"),
)

UNILM_PARTS = (
    Part("mlm", 2.0, "bidirectional", mode="nlu", label="bidirectional"),
    Part("prefix-lm", 2.0, "prefix", mode="s2s", label="seq2seq"),
    Part("clm", 1.0, "causal", mode="s2s", label="left-to-right"),
    Part("mlm", 1.0, "right-to-left", mode="nlu", label="right-to-left"),
)


@dataclass(frozen=True)
class UL2Options:
    mode_tokens: bool = True


@dataclass(frozen=True)
class UniLMOptions:
    mode_tokens: bool = False


class UL2(Mixture):
    name = "ul2"
    Options = UL2Options
    tokenizer_kind = "unigram"  # T5's SentencePiece vocabulary

    @classmethod
    def parts_of(cls, options) -> tuple[Part, ...]:
        return DENOISERS

    @classmethod
    def default_pattern(cls, arch: str) -> str | None:
        return "prefix" if arch == "stack" else "causal"


class UniLM(Mixture):
    name = "unilm"
    Options = UniLMOptions
    tokenizer_kind = "wordpiece"  # UniLM starts from BERT's vocabulary

    @classmethod
    def parts_of(cls, options) -> tuple[Part, ...]:
        return UNILM_PARTS
