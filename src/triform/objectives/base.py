"""The objective interface: token ids in, a Batch out, a loss on the model's logits, and everything the
rest of triform asks of an objective: its options, how long a text may be, how a prompt is framed for
generation, whether it reads pairs, its evaluation metrics, how a task should read a body it trained.

Objectives receive text as token ids without special tokens and add the ones their format needs.
They hold no state between batches; randomness comes from the `generator` passed to `prepare`, so
that a seeded run (and a resumed one) sees the same masks. Nothing outside objectives/ asks an
objective for its name to decide anything: it asks the objective.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from triform.errors import TriformError
from triform.kernels.loss import cross_entropy
from triform.objectives.batch import IGNORE, Batch, rows
from triform.objectives.compat import check_pair
from triform.objectives.layout import (
    CONTINUE,
    SOURCE_TARGET,
    PromptLayout,
    packed_source_target_batch,
    source_target_batch,
)
from triform.vocab import SpecialTokens

EVAL_SEED = 1234  # the same masks at every evaluation, so that successive losses compare
# How the documents of a packed window see each other: each attended and placed as if alone, or as
# one stream separated by [EOS] (GPT-2's packing, in which they attend across the boundary).
PACKS = ("documents", "stream")


@dataclass(frozen=True)
class NoOptions:
    """An objective without options of its own."""


@dataclass(frozen=True)
class Windows:
    """How language-model windows are cut from a token stream for an objective: `length` tokens,
    starting every `stride` tokens, documents separated by `separator` (None: [EOS] as stored)."""

    length: int
    stride: int
    separator: int | None = None


def as_sequences(examples: Tensor | Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(examples, Tensor):
        return examples.tolist()
    return [list(example) for example in examples]


class Objective:
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions  # the objective's own options, a frozen dataclass
    needs: ClassVar[tuple[str, ...]] = ()  # special tokens of its own, beyond those of the layouts
    reads_pairs: ClassVar[bool] = False  # (source, target) pairs rather than plain text
    tokenizer_kind: ClassVar[str] = "bpe"  # the tokenizer its reference model used (`tokenizer.kind auto`)
    # What `triform compare` holds it against (compare/head_to_head.py): the held-out task it trains
    # for most directly, as a specialist; and the objective its paper measured it against at equal compute.
    specialty: ClassVar[str | None] = None  # "next-token", "masked-token" or "restore"
    rival: ClassVar[str | None] = None

    def __init__(
        self,
        specials: SpecialTokens,
        vocab_size: int,
        *,
        arch: str = "stack",
        pattern: str | None = None,
        label_smoothing: float = 0.0,
        options=None,
        packed: bool = False,
        pack: str = "documents",
        tokenizer=None,
    ):
        """`options` is an instance of the objective's `Options`; `packed` says that examples are
        windows cut from a stream of documents separated by [EOS] (the training data's windows),
        rather than single texts, and `pack` how those documents see each other (PACKS);
        `tokenizer` (a tokenizers.Tokenizer) lets an objective read what it needs from the vocabulary
        (word starts, sentence ends)."""
        # Refuse an impossible pair before any compute.
        self.pattern = self.pattern_on(arch, pattern, options if options is not None else self.Options())
        self.arch = arch
        # An encoder-decoder's decoder may start from a token of its own instead of [BOS] (T5 has no [BOS]).
        starts_without_bos = arch == "encoder-decoder" and specials.decoder_start is not None
        layout_needs = ("pad", "eos") + (() if starts_without_bos else ("bos",))
        layout_needs += ("sep",) if arch == "stack" and self.source_target(arch) else ()
        specials.require(layout_needs + self.needs, f"the {self.name} objective")
        self.specials = specials
        self.vocab_size = vocab_size
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.options = options if options is not None else self.Options()
        if pack not in PACKS:
            raise ValueError(f"pack: expected one of {list(PACKS)}, got {pack!r}")
        self.packed, self.pack = packed, pack
        self.tokenizer = tokenizer

    @classmethod
    def pattern_on(cls, arch: str, pattern: str | None, options=None) -> str | None:
        """The pattern it trains under on `arch` (the pair's default for None), or IncompatiblePair
        saying why not (objectives/compat.py); a mixture checks each of its parts."""
        return check_pair(arch, cls.name, pattern)

    @classmethod
    def part_for(cls, options, arch: str, pattern: str | None, *, use: str | None = None, need: str | None = None):
        """What a use of a model it trained follows, when that is not the objective itself: a mixture
        answers with one of its parts (objectives/mixture.py). None: the objective itself."""
        return None

    @classmethod
    def options_from(cls, values: dict, source: str = "objective"):
        """The objective's Options from plain values; an unknown name is an error naming the options."""
        known = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - known)
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise TriformError(
                f"{source}: the {cls.name} objective has no option {unknown[0]!r} (its options: {listed})"
            )
        return cls.Options(**values)

    # --- the data ------------------------------------------------------------------------------
    def windows(self, max_len: int) -> Windows:
        """How a packed token stream is cut into examples whose layout fits `max_len`: by default one
        special token ([EOS], [BOS] or [SEP]) beside the text."""
        return Windows(max_len - 1, max_len - 1)

    @property
    def within_documents(self) -> bool:
        """Whether each document of a packed window is attended and placed as if alone."""
        return self.packed and self.pack == "documents"

    @property
    def separator(self) -> int:
        """The token between two documents of a window: [EOS] as the stream stores it, unless the
        objective's `windows` asks for another."""
        return self.specials.eos

    def documents_of(self, window: list[int]) -> list[list[int]]:
        """The documents of a window, without their separators; the first and the last may be cut
        by the window's edges, and a window of separators only is one empty text."""
        documents, current = [], []
        for token in window:
            if token == self.separator:
                documents.append(current)
                current = []
            else:
                current.append(token)
        documents.append(current)
        return [d for d in documents if d] or [[]]

    def packed_window(self, texts: list[list[int]]) -> list[int]:
        """One window of a stream that holds `texts` one after another (what `triform inspect`
        shows): the texts joined by the separator, as the data pipeline stores them."""
        window: list[int] = []
        for number, text in enumerate(texts):
            window += ([self.separator] if number else []) + list(text)
        return window

    def pairs_batch(self, examples, generator, pair) -> Batch:
        """The batch of a source -> target objective: `pair(text, generator) -> (source, target)` of
        each text; in a packed window under `pack documents`, of each of its documents, laid out
        back to back so that none sees another (objectives/layout.py)."""
        sequences = as_sequences(examples)
        if not self.within_documents:
            return source_target_batch([pair(s, generator) for s in sequences], self.arch, self.pattern, self.specials)
        rows = [[pair(d, generator) for d in self.documents_of(s)] for s in sequences]
        return packed_source_target_batch(rows, self.arch, self.pattern, self.specials)

    def prepare(self, examples, generator: torch.Generator | None = None) -> Batch:
        raise NotImplementedError

    # --- the training problem (train/loop.py) ----------------------------------------------
    def collate(self, examples: list, generator: torch.Generator | None, part: slice | None = None) -> Batch:
        """The batch of rows `part` of `examples`. Every process prepares the whole global batch with
        the same generator and keeps its own rows, so that the masks drawn do not depend on how many
        processes share the work."""
        batch = self.prepare(examples, generator)
        return batch if part is None else rows(batch, part.start, part.stop)

    def training_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the trainer optimises and runs on each batch: the model itself, unless the objective
        trains modules of its own beside it (train/problem.py)."""
        return model

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Mean cross-entropy over predicted tokens; logits are (B, T, V), or (N, V) with sparse logits."""
        targets = batch.targets[batch.logits_at] if batch.sparse_logits else batch.targets
        return cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
        )

    def n_targets(self, batch: Batch) -> int:
        return batch.n_targets

    def compute(self, batch: Batch, parameters: dict[str, int]) -> float:
        """Tokens x non-embedding parameters of one batch (what `triform compare` budgets by):
        each real token times the parameters of the stack it passes through, `parameters` being
        {"stack": N} or {"encoder": N_e, "decoder": N_d}. An objective that runs more than the
        model (a generator of replaced tokens, say) adds that here."""

        def real(ids: Tensor, mask: Tensor | None) -> int:
            return int(ids.numel() if mask is None else mask.sum())

        if batch.source_ids is not None:
            return (
                real(batch.source_ids, batch.source_padding_mask) * parameters["encoder"]
                + real(batch.ids, batch.padding_mask) * parameters["decoder"]
            )
        return real(batch.ids, batch.padding_mask) * parameters["stack"]

    @torch.no_grad()
    def evaluate(self, model, data, context) -> dict:
        """Mean loss per predicted token over the validation batches `context` hands out, its
        perplexity and token accuracy. `context` (train/problem.py) yields this process's share of
        each batch and sums over processes; the same masks at every evaluation (EVAL_SEED)."""
        loss_sum = n_targets = correct = 0.0
        for number, examples, part, weight in context.batches(data):
            batch = self.collate(examples, torch.Generator().manual_seed(EVAL_SEED + number), part)
            batch = batch.to(context.device)
            with context.autocast():
                logits = model(**batch.model_inputs())
            targets = batch.targets[batch.logits_at] if batch.sparse_logits else batch.targets
            logits, targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
            predicted = targets != IGNORE
            loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
            loss_sum += weight * float(loss)
            n_targets += weight * float(predicted.sum())
            correct += weight * float((logits.argmax(-1)[predicted] == targets[predicted]).sum())
        loss_sum, n_targets, correct = context.sum([loss_sum, n_targets, correct])
        loss = loss_sum / max(n_targets, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50)),
            "accuracy": correct / max(n_targets, 1),
            "tokens": int(n_targets),
        }

    def score(self, result: dict) -> float:
        """What picks the best checkpoint, lower is better: the validation loss."""
        return result["loss"]

    def summary(self, result: dict) -> str:
        loss, perplexity, accuracy = result["loss"], result["perplexity"], 100 * result["accuracy"]
        return f"loss {loss:.4f} | perplexity {perplexity:.2f} | accuracy {accuracy:.1f}%"

    # --- what a model it trained can do: asked of the class, so that no special token of training
    # (padding, say) is needed to generate ----------------------------------------------------------
    @classmethod
    def source_target(cls, arch: str) -> bool:
        """Whether it lays text out as source -> target on `arch` (objectives/layout.py)."""
        return True

    @classmethod
    def fills_masks_on(cls, arch: str) -> bool:
        """Whether a model it trained on `arch` fills [MASK]s in place (fill-mask, mask-predict)."""
        return False

    @classmethod
    def writes_on(cls, arch: str) -> bool:
        """Whether a model it trained on `arch` writes text at all (continues it, fills masks, writes
        a target), or only reads it for the heads a task puts on it."""
        return True

    @classmethod
    def metrics_on(cls, arch: str) -> tuple[str, ...]:
        """Metrics `triform eval` reports beyond loss, perplexity and accuracy (train/evaluate.py)."""
        return ()

    @classmethod
    def layout_for(cls, arch: str, pattern: str, specials: SpecialTokens) -> PromptLayout:
        """How a prompt is laid out for generation, as this objective laid out its training text: a
        source -> target objective reads the prompt as the source and writes the target."""
        return PromptLayout(arch, SOURCE_TARGET if cls.source_target(arch) else CONTINUE, pattern, specials)

    @property
    def fills_masks(self) -> bool:
        return self.fills_masks_on(self.arch)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.metrics_on(self.arch)

    def prompt_layout(self) -> PromptLayout:
        return self.layout_for(self.arch, self.pattern, self.specials)

    @classmethod
    def body_pattern(cls, arch: str, pattern: str, writes: bool) -> str:
        """How a task reads a body this objective trained under `pattern`: heads read a stack
        bidirectionally where it learned to see both sides (a bidirectional or prefix pattern) and
        causally where it learned left to right; a task that writes text reads its source as a
        prefix. An encoder-decoder is read through its causal decoder."""
        if arch == "encoder-decoder":
            return "causal"
        if writes:
            return "prefix"
        return "causal" if pattern == "causal" else "bidirectional"

    def describe(self) -> str:
        return f"{self.arch} + {self.name} + {self.pattern}"

    def shown_rows(self, batch: Batch, names, seed: int = 0) -> list[tuple[str, list[str]]]:
        """What `triform inspect` shows of a one-example stack batch, row by row: the model's input and
        its targets (· where nothing is predicted); `names(ids)` spells tokens."""
        targets = ["·" if int(t) == IGNORE else names([t])[0] for t in batch.targets[0]]
        return [("input", names(batch.ids[0])), ("target", targets)]


def random_split(sequence: list[int], generator: torch.Generator | None) -> tuple[list[int], list[int]]:
    """Split at a uniformly random point, leaving at least one token on each side when possible."""
    if len(sequence) < 2:
        return list(sequence), []
    point = int(torch.randint(1, len(sequence), (1,), generator=generator))
    return sequence[:point], sequence[point:]
