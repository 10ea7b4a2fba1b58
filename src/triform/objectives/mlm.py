"""Masked language modelling (Devlin et al. 2019, §3.1 and appendix A.1).

Of each text, 15 % of the tokens are chosen (at least one; the exact count per sequence, as in BERT's
own data pipeline); of those, 80 % become [MASK], 10 % a random token and 10 % stay as they are. Only
the chosen positions are predicted, and the model computes logits only there.

A packed window (RoBERTa's FULL-SENTENCES, Liu et al. 2019, §4.2) is chosen from as one text: 15 % of
its tokens, never its separators, so that each document gets its share in expectation (choosing 15 %
of each, at least one, would mask most of a one-word document). Under `pack documents` each masked
token is then predicted from its own document alone (RoBERTa's DOC-SENTENCES never crosses one
either), at positions counted from the document's start; under the prefix pattern each document
draws a prefix of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triform.errors import TriformError
from triform.objectives.base import Objective, Windows, as_sequences
from triform.objectives.batch import IGNORE, Batch, pad, pad_targets
from triform.objectives.layout import PromptLayout, packed_source_target_batch, source_target_batch
from triform.vocab import word_start_table


@dataclass(frozen=True)
class MaskedLMOptions:
    rate: float = 0.15  # fraction of the tokens chosen
    mask_fraction: float = 0.8  # of the chosen tokens, the share replaced by [MASK]
    random_fraction: float = 0.1  # the share replaced by a random token (the rest stay as they are)
    whole_word: bool = False  # choose whole words (Devlin et al.'s whole-word masking)


class MaskedLM(Objective):
    name = "mlm"
    specialty = "masked-token"
    Options = MaskedLMOptions
    needs = ("cls", "sep", "mask")
    tokenizer_kind = "wordpiece"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        if not 0.0 < o.rate < 1.0:
            raise ValueError(f"mlm rate: expected a value in (0, 1), got {o.rate}")
        if o.mask_fraction < 0 or o.random_fraction < 0 or o.mask_fraction + o.random_fraction > 1.0:
            raise ValueError("mlm mask_fraction and random_fraction must be non-negative and sum to at most 1")
        self._replacements = None
        # Whole-word masking reads where words start from the tokenizer's vocabulary.
        self.word_starts = torch.tensor(word_start_table(self.tokenizer)) if o.whole_word and self.tokenizer else None

    @classmethod
    def source_target(cls, arch: str) -> bool:
        return arch == "encoder-decoder"

    @property
    def replacements(self) -> torch.Tensor:
        """The tokens a random replacement draws from: every one but the special tokens."""
        if self._replacements is None:
            special = self.specials.all_ids
            self._replacements = torch.tensor([i for i in range(self.vocab_size) if i not in special])
        return self._replacements

    @classmethod
    def fills_masks_on(cls, arch: str) -> bool:
        return arch == "stack"

    @classmethod
    def metrics_on(cls, arch: str) -> tuple[str, ...]:
        return ("pseudo_perplexity",) if arch == "stack" else ()

    def windows(self, max_len: int) -> Windows:
        if self.arch == "encoder-decoder":
            return super().windows(max_len)
        # [CLS] text [SEP]; documents inside a window are separated by [SEP], as RoBERTa packs them.
        return Windows(max_len - 2, max_len - 2, separator=self.separator)

    @property
    def separator(self) -> int:
        return self.specials.sep if self.arch == "stack" else self.specials.eos

    def stack_documents(self, ids: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B, T) documents of `[CLS] d0 [SEP] d1 [SEP] ...` rows under `pack documents`: each [SEP]
        ends its document, as it ends a text alone; padding joins the last. None when no row holds two."""
        if not self.within_documents:
            return None
        ends = (ids == self.separator).long()
        documents = ends.cumsum(-1) - ends  # (B, T) separators before each slot
        if padding_mask is not None:
            last = documents.gather(1, (padding_mask.sum(-1, keepdim=True) - 1).clamp(min=0))
            documents = documents.minimum(last)
        return documents if bool(documents.any()) else None

    @classmethod
    def layout_for(cls, arch: str, pattern: str, specials) -> PromptLayout:
        if cls.fills_masks_on(arch):
            raise TriformError(
                "this model was trained with mlm: it fills masks rather than continuing text; "
                "use fill-mask, or mask-predict to generate a sequence of a given length"
            )
        return super().layout_for(arch, pattern, specials)

    def prepare(self, examples, generator=None, word_starts: list[list[bool]] | None = None) -> Batch:
        """`word_starts[b][i]` is True where token i of text b begins a word (whole-word masking);
        by default it is read from the tokenizer the objective was built with."""
        sequences = as_sequences(examples)
        if self.options.whole_word and word_starts is None:
            if self.word_starts is None:
                raise ValueError("whole-word masking needs word_starts for every text, or the tokenizer")
            word_starts = [self.starts_of(s) for s in sequences]
        corrupted, originals = [], []
        for index, sequence in enumerate(sequences):
            starts = word_starts[index] if word_starts is not None else None
            corrupted.append(self.corrupt(sequence, starts, generator))
            originals.append(sequence)

        if self.arch == "encoder-decoder":
            return self.encoder_decoder_batch([c for c, _ in corrupted], originals)
        cls, sep = self.specials.cls, self.specials.sep
        ids, padding_mask = pad([[cls, *c, sep] for c, _ in corrupted], self.specials.pad)
        targets = pad_targets([[IGNORE, *t, IGNORE] for _, t in corrupted], ids.shape[1])
        documents = self.stack_documents(ids, padding_mask)
        prefix_lengths = None
        if self.pattern == "prefix" and documents is None:
            lengths = torch.tensor([len(c) + 2 for c, _ in corrupted])
            prefix_lengths = 1 + (torch.rand(len(lengths), generator=generator) * lengths).long()
        elif self.pattern == "prefix":  # a prefix of its own in each document: (B, D)
            lengths = document_lengths(documents, padding_mask)
            prefix_lengths = 1 + (torch.rand(lengths.shape, generator=generator) * lengths).long()
        return Batch(
            ids,
            targets,
            self.pattern,
            padding_mask,
            prefix_lengths=prefix_lengths,
            sparse_logits=True,
            documents=documents,
        )

    def encoder_decoder_batch(self, corrupted: list[list[int]], originals: list[list[int]]) -> Batch:
        """The encoder reads the masked text, the decoder writes it whole; under `pack documents`
        one pair per document, cut where the original has its separators (corruption keeps the
        length and never touches a special token)."""
        if not self.within_documents:
            pairs = list(zip(corrupted, originals))
            return source_target_batch(pairs, self.arch, self.pattern, self.specials)
        rows = []
        for masked, original in zip(corrupted, originals):
            cuts = [i for i, token in enumerate(original) if token == self.separator]
            bounds = zip([-1, *cuts], [*cuts, len(original)])
            pairs = [(masked[a + 1 : b], original[a + 1 : b]) for a, b in bounds if b > a + 1]
            rows.append(pairs or [([], [])])
        return packed_source_target_batch(rows, self.arch, self.pattern, self.specials)

    def starts_of(self, example: list[int]) -> list[bool]:
        """Whether each token begins a word; the token after a special token always does."""
        starts = self.word_starts[torch.tensor(example, dtype=torch.long)].tolist()
        special = self.specials.all_ids
        for i in range(1, len(example)):
            if example[i - 1] in special:
                starts[i] = True
        if starts:
            starts[0] = True
        return starts

    def masked_inputs(self, sequences: list[list[int]]) -> Batch:
        """Texts with [MASK] tokens laid out as in training, ``[CLS] text [SEP]``, to be filled: under the
        prefix pattern the whole text is the prefix, so that every mask sees both sides as in training.
        The targets are unknown (IGNORE); logits are asked for at the [MASK] slots."""
        cls, sep = self.specials.cls, self.specials.sep
        ids, padding_mask = pad([[cls, *s, sep] for s in sequences], self.specials.pad)
        documents = self.stack_documents(ids, padding_mask)  # packed windows (pseudo-perplexity), as in training
        prefix = None
        if self.pattern == "prefix":
            prefix = (
                torch.full((len(sequences),), ids.shape[1])
                if documents is None
                else torch.full((len(sequences), int(documents.max()) + 1), ids.shape[1])
            )
        at_masks = ids == self.specials.mask
        targets = torch.where(at_masks, 0, IGNORE)
        return Batch(
            ids, targets, self.pattern, padding_mask, prefix_lengths=prefix, sparse_logits=True, documents=documents
        )

    def choose(self, sequence: list[int], word_starts: list[bool] | None, generator) -> list[int]:
        """Positions to predict: round(rate · n) of the non-special tokens, whole words when asked."""
        special = self.specials.all_ids
        candidates = [i for i, token in enumerate(sequence) if token not in special]
        if not candidates:
            return []
        budget = max(1, round(self.options.rate * len(candidates)))
        if word_starts is None:
            words = [[i] for i in candidates]
        else:
            words = []
            for i in candidates:
                if word_starts[i] or not words:
                    words.append([i])
                else:
                    words[-1].append(i)
        chosen: list[int] = []
        for w in torch.randperm(len(words), generator=generator).tolist():
            # As BERT's whole-word masking: skip a word that would overshoot the budget.
            if len(chosen) + len(words[w]) > budget:
                continue
            chosen.extend(words[w])
            if len(chosen) == budget:
                break
        return sorted(chosen)

    def corrupt(self, sequence: list[int], word_starts, generator) -> tuple[list[int], list[int]]:
        """Return (input tokens, targets with IGNORE at unchosen positions), same length as the text."""
        chosen = self.choose(sequence, word_starts, generator)
        inputs, targets = list(sequence), [IGNORE] * len(sequence)
        draws = torch.rand(len(chosen), generator=generator).tolist()
        randoms = torch.randint(len(self.replacements), (len(chosen),), generator=generator).tolist()
        mask_fraction, random_fraction = self.options.mask_fraction, self.options.random_fraction
        for position, draw, random_index in zip(chosen, draws, randoms):
            targets[position] = sequence[position]
            if draw < mask_fraction:
                inputs[position] = self.specials.mask
            elif draw < mask_fraction + random_fraction:
                inputs[position] = int(self.replacements[random_index])
        return inputs, targets


def document_lengths(documents: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, D) real tokens in each document of each row; 0 past a row's last document."""
    real = torch.ones_like(documents) if padding_mask is None else padding_mask.long()
    lengths = torch.zeros(documents.shape[0], int(documents.max()) + 1, dtype=torch.long)
    return lengths.scatter_add_(1, documents, real)
