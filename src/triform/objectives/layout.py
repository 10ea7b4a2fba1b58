"""How an objective lays out text: source -> target examples for training, and prompts for generation.

Objectives that produce a source and a target (span corruption, denoising, prefix LM, seq2seq, and
clm or mlm on an encoder-decoder) share these two training layouts, so that the same data trains an
encoder-decoder or a single stack:

- encoder-decoder: the encoder reads ``source [EOS]``; the decoder reads ``[BOS] target`` and
  predicts ``target [EOS]`` (teacher forcing). A vocabulary with its own decoder start token
  (T5's and Marian's padding, BART's end of sequence) puts that token in place of [BOS].
- stack: one sequence ``source [SEP] target [EOS]``; the source and the separator form the
  prefix, and only the target tokens and the final [EOS] are predicted (UniLM, Dong et al. 2019).

A packed window holds several documents; each becomes a pair of its own, laid out as above and put
back to back in one row with the document of each slot (`packed_source_target_batch`), as T5 packs
several examples into one (Raffel et al. 2020, §3.1.2), its code keeping them apart by segment ids.

A prompt is laid out for generation exactly as the training text was (`PromptLayout`): a stack
trained with clm continues ``[BOS] prompt`` (objectives/clm.py); a source -> target stack reads
``source [SEP]`` and writes the target after it, as segment 1 when the model has segment embeddings;
an encoder-decoder encodes ``source [EOS]`` and its decoder starts from [BOS] (or its own start token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triform.errors import TriformError
from triform.objectives.batch import IGNORE, Batch, pad, pad_documents, pad_targets
from triform.vocab import SpecialTokens

Pair = tuple[list[int], list[int]]
CONTINUE, SOURCE_TARGET = "continue", "source-target"


def source_target_batch(pairs: list[Pair], arch: str, pattern: str, specials: SpecialTokens) -> Batch:
    """One (source, target) pair per row, laid out for `arch`."""
    return packed_source_target_batch([[pair] for pair in pairs], arch, pattern, specials)


def packed_source_target_batch(rows: list[list[Pair]], arch: str, pattern: str, specials: SpecialTokens) -> Batch:
    """Rows of (source, target) pairs, one pair per document of a packed window: each document is
    laid out as a pair alone would be, back to back, with the document of each slot (and on a stack
    the prefix of each document), so that none sees another (nn/masks.py)."""
    if arch == "encoder-decoder":
        return encoder_decoder_rows(rows, pattern, specials)
    sequences, target_rows, segments, prefixes, documents = [], [], [], [], []
    for pairs in rows:
        ids, targets, types, row_prefixes, row_documents = [], [], [], [], []
        for number, (source, target) in enumerate(pairs):
            sequence = [*source, specials.sep, *target, specials.eos]
            n_prefix = len(source) + 1
            ids += sequence[:-1]
            # Position i predicts token i + 1: the separator predicts the first target token.
            targets += [IGNORE] * (n_prefix - 1) + sequence[n_prefix:]
            types += [0] * n_prefix + [1] * (len(sequence) - 1 - n_prefix)
            row_prefixes.append(n_prefix)
            row_documents += [number] * (len(sequence) - 1)
        sequences.append(ids)
        target_rows.append(targets)
        segments.append(types)
        prefixes.append(row_prefixes)
        documents.append(row_documents)
    ids, padding_mask = pad(sequences, specials.pad)
    token_types, _ = pad(segments, 0)
    packed = pad_documents(documents, ids.shape[1])
    prefix_lengths = None
    if pattern == "prefix":  # (B,) for rows of one text; (B, D), one per document, for packed rows
        prefix_lengths = torch.tensor([p[0] for p in prefixes]) if packed is None else pad(prefixes, 0)[0]
    return Batch(
        ids,
        pad_targets(target_rows, ids.shape[1]),
        pattern,
        padding_mask,
        prefix_lengths=prefix_lengths,
        token_types=token_types,
        sparse_logits=True,
        documents=packed,
    )


def encoder_decoder_rows(rows: list[list[Pair]], pattern: str, specials: SpecialTokens) -> Batch:
    """The encoder reads `source [EOS]` of each document, the decoder `[BOS] target` of the same."""
    sources, source_documents, inputs, targets, documents = [], [], [], [], []
    for pairs in rows:
        sources.append([token for source, _ in pairs for token in (*source, specials.eos)])
        source_documents.append([number for number, (source, _) in enumerate(pairs) for _ in range(len(source) + 1)])
        inputs.append([token for _, target in pairs for token in (specials.decoder_start_id, *target)])
        targets.append([token for _, target in pairs for token in (*target, specials.eos)])
        documents.append([number for number, (_, target) in enumerate(pairs) for _ in range(len(target) + 1)])
    source_ids, source_mask = pad(sources, specials.pad)
    ids, padding_mask = pad(inputs, specials.pad)
    return Batch(
        ids,
        pad_targets(targets, ids.shape[1]),
        pattern,
        padding_mask,
        source_ids=source_ids,
        source_padding_mask=source_mask,
        documents=pad_documents(documents, ids.shape[1]),
        source_documents=pad_documents(source_documents, source_ids.shape[1]),
    )


@dataclass(frozen=True)
class PromptLayout:
    """A prompt laid out for generation as the objective laid out its training text."""

    arch: str  # "stack" or "encoder-decoder"
    kind: str  # CONTINUE (clm on a stack) or SOURCE_TARGET
    pattern: str  # self-attention pattern of the stack, or of the decoder
    specials: SpecialTokens
    mode: int | None = None  # the mode token read first, as in training (objectives/modes.py); None: none

    def __post_init__(self):
        s = self.specials
        if self.arch == "encoder-decoder":
            s.require(("eos",), "generation with an encoder-decoder")
            if s.decoder_start_id is None:
                raise TriformError("generation with an encoder-decoder needs a bos token (or a decoder start token)")
        elif self.kind == SOURCE_TARGET:
            s.require(("sep",), "generation with a stack trained source -> target")
        else:
            s.require(("bos",), "generation with a stack trained left to right")

    def frame(self, prompt: list[int]) -> list[int]:
        """Token ids of a prompt (no special tokens) -> what the stack or the encoder reads first."""
        s, lead = self.specials, [] if self.mode is None else [self.mode]
        if self.arch == "encoder-decoder":
            return [*lead, *prompt, s.eos]
        if self.kind == CONTINUE:
            return [*lead, s.bos, *prompt]
        return [*lead, *prompt, s.sep]

    def room(self, prompt: list[int], max_len: int) -> int:
        """How many tokens may follow the prompt within the model's max_len; below 1, it is too long.
        An encoder-decoder's source has max_len positions of its own, its decoder another max_len."""
        n_framed = len(prompt) + 1 + (self.mode is not None)  # one special token in every layout, and the mode
        if self.arch == "encoder-decoder":
            return max_len - 1 if n_framed <= max_len else 0  # the decoder's [BOS] takes a position
        return max_len - n_framed

    def fit(self, prompt: list[int], max_len: int) -> list[int]:
        """Shorten a prompt that leaves no room: a source keeps its beginning, a text to continue its end."""
        if self.room(prompt, max_len) >= 1:
            return list(prompt)
        keep = (max_len - 1 if self.arch == "encoder-decoder" else max_len - 2) - (self.mode is not None)
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
        return self.arch == "stack" and self.kind == SOURCE_TARGET

    @property
    def writes_target(self) -> bool:
        """Whether the prompt is a source the model writes a target for (translation), rather than
        a text it continues."""
        return self.kind == SOURCE_TARGET
