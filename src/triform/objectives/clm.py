"""Causal language modelling: predict each token from the ones before it (Radford et al. 2018)."""

from __future__ import annotations

from triform.objectives.base import Objective, Windows, as_sequences, random_split
from triform.objectives.batch import Batch, pad, pad_targets


class CausalLM(Objective):
    """On a stack, each text becomes ``[BOS] text [EOS]`` and every token is predicted.

    With ``packed=True`` each row is already a window of a token stream in which the data pipeline
    separated documents by [EOS] (GPT-2's format), and is used as it is. Under ``pack documents``
    each [EOS] begins a document, as [BOS] begins a text alone: the token after it is predicted
    from it alone, every later one from its own document only, at positions counted from the [EOS]
    (`[EOS] text` has the layout of `[BOS] text` alone, with [EOS] in [BOS]'s place). On an
    encoder-decoder the encoder must read something, so each text (each document, packed) is split
    at a random point and the decoder predicts the continuation: there, clm and prefix-lm are the
    same objective.
    """

    name = "clm"
    specialty = "next-token"

    @classmethod
    def source_target(cls, arch: str) -> bool:
        return arch == "encoder-decoder"

    def windows(self, max_len: int) -> Windows:
        if self.arch == "encoder-decoder":
            return super().windows(max_len)
        # Inputs are a window's first max_len tokens, targets its last max_len; windows overlap by
        # one token, so that every token of the stream is predicted exactly once.
        return Windows(max_len + 1, max_len)

    def packed_window(self, texts: list[list[int]]) -> list[int]:
        """On a stack each text follows an [EOS], and the last one's [EOS] is predicted too."""
        if self.arch == "encoder-decoder":
            return super().packed_window(texts)
        return [self.separator, *super().packed_window(texts), self.separator]

    def prepare(self, examples, generator=None) -> Batch:
        if self.arch == "encoder-decoder":
            return self.pairs_batch(examples, generator, random_split)
        sequences = as_sequences(examples)
        if not self.packed:
            sequences = [[self.specials.bos, *s, self.specials.eos] for s in sequences]
        ids, padding_mask = pad([s[:-1] for s in sequences], self.specials.pad)
        targets = pad_targets([s[1:] for s in sequences], ids.shape[1])
        documents = None
        if self.within_documents:
            starts = (ids == self.separator).long()
            documents = starts.cumsum(-1) - starts[:, :1]  # (B, T), from 0 in each row
            documents = documents if bool(documents[:, -1].any()) else None  # one document a row: no mask
        return Batch(ids, targets, self.pattern, padding_mask, documents=documents)

    @classmethod
    def body_pattern(cls, arch: str, pattern: str, writes: bool) -> str:
        """A causal LM saw only left-to-right attention: a task reads it so, writing text included."""
        return "causal"
