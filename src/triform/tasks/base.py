"""What every task shares: records in, features (laid-out sequences) through the model, one
prediction per record out, and the optional auxiliary language-model loss of GPT-1.

A task turns a record into one or more features. A feature holds one or more rows: a pair read in
both orders is one feature of two rows, a multiple-choice question one row per candidate, a long
QA context one feature per window. Predictions are decided per record from all of its features.

A task is a training problem as an objective is (train/problem.py), so that the trainer runs tasks
as it runs pretraining: `batch = task.collate(features, generator)`, `outputs =
model(**batch.model_inputs())`, `loss = task.loss(outputs, batch)`, a mean over `task.n_targets(batch)`;
`task.evaluate` gives the validation loss and the task's metrics, `task.score` picks the best.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from triform.models.modes import evaluation
from triform.objectives import Batch, make_objective
from triform.objectives.batch import IGNORE, pad
from triform.tasks.data import Record
from triform.tasks.framing import Framing, Sequence
from triform.tasks.heads import PooledHead, TokenHead
from triform.tasks.model import TaskModel
from triform.vocab import unpadded


@dataclass
class Feature:
    record: int  # index of the record it came from
    rows: list[Sequence]
    target: Any = None  # what the loss compares with; None at prediction time
    info: dict = field(default_factory=dict)  # what decoding needs (offsets of a QA window, ...)


@dataclass
class Validation:
    """Validation records, and their features encoded once for the validation loss."""

    records: list[Record]
    features: list[Feature]

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class TaskBatch:
    ids: Tensor  # (N, T) every row of every feature, right-padded
    padding_mask: Tensor | None
    token_types: Tensor
    features: list[Feature]
    targets: Any = None
    combine: int = 1  # rows whose summaries are summed into one example (both orders of a pair)
    lm: Batch | None = None  # the auxiliary language-model batch, made of the same texts
    body_batch: Batch | None = None  # text2text: the batch of the body's own seq2seq objective
    source_ids: Tensor | None = None  # the trainer counts encoder tokens here (text2text)

    @property
    def n_inputs(self) -> int:
        """Input tokens, what tokens per second count (an encoder's source included)."""
        count = int(self.ids.numel() if self.padding_mask is None else self.padding_mask.sum())
        return count + (int(self.source_ids.numel()) if self.source_ids is not None else 0)

    @property
    def n_targets(self) -> int:
        """What the loss averages over: examples, or tagged words, or target tokens."""
        if self.body_batch is not None:
            return self.body_batch.n_targets
        if isinstance(self.targets, Tensor) and self.targets.dim() == 2:
            return int((self.targets != IGNORE).sum())
        return len(self.features)

    def model_inputs(self) -> dict:
        if self.body_batch is not None:
            return self.body_batch.model_inputs()
        inputs = {
            "ids": self.ids,
            "padding_mask": self.padding_mask,
            "token_types": self.token_types,
            "combine": self.combine,
        }
        if self.lm is not None:
            inputs["lm"] = self.lm.model_inputs()
        return inputs

    def to(self, device: torch.device | str) -> TaskBatch:
        def move(value):
            if isinstance(value, tuple):
                return tuple(move(v) for v in value)
            return value.to(device) if hasattr(value, "to") else value

        for name in ("ids", "padding_mask", "token_types", "targets", "lm", "body_batch", "source_ids"):
            setattr(self, name, move(getattr(self, name)))
        return self


@dataclass(frozen=True)
class NoOptions:
    """A task without options of its own."""


class Task:
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions  # the task's own options (`triform finetune --qa.stride 64`)
    writes: ClassVar[bool] = False  # writes text with the body's own head (text2text), rather than a head's scores
    inputs: ClassVar[tuple[str, ...]]  # columns read to make a prediction
    targets: ClassVar[tuple[str, ...]]  # columns holding the answer: needed to train and to score
    optional: ClassVar[tuple[str, ...]] = ()  # other columns read when present ("id" is for every task)
    # The columns of a training record, where they differ from inputs + targets (embed trains on
    # pairs to contrast and is scored on pairs with a score).
    training: ClassVar[tuple[str, ...] | None] = None
    pooled: ClassVar[bool] = True  # a PooledHead; otherwise a TokenHead
    metric: ClassVar[str]  # the score that picks the best checkpoint (higher is better)
    patterns: ClassVar[tuple[str, ...]] = ("bidirectional", "causal")  # how a stack body may be read

    def __init__(self, framing: Framing, tokenizer, *, lm_weight: float = 0.0):
        if framing.pattern not in self.patterns:
            raise ValueError(
                f"pattern: the {self.name} task reads a stack with one of the patterns {', '.join(self.patterns)}, "
                f"not {framing.pattern}"
            )
        if lm_weight < 0:
            raise ValueError(f"lm_weight: expected 0 or more, got {lm_weight}")
        self.framing = framing
        self.tokenizer = unpadded(tokenizer)  # the file's padding would be read as text
        self.lm_weight = lm_weight
        self._lm_objective = None

    # --- records --------------------------------------------------------------------------------
    def text(self, record: Record, column: str) -> str:
        value = record.require(column)
        if not isinstance(value, str):
            raise record.error(f"{column!r} must be text, got {value!r}")
        return value

    def check_columns(self, columns: dict[str, str] | None, option: str = "columns") -> dict[str, str]:
        """A renaming of the task's columns to a file's ({"label": "genre"}); other keys are refused."""
        known = self.inputs + self.targets + (self.training or ()) + self.optional + ("id",)
        for column in columns or {}:
            if column not in known:
                raise ValueError(
                    f"{option}: {column!r} is not a column of the {self.name} task; it reads {list(known)}"
                )
        return dict(columns or {})

    def training_columns(self) -> tuple[str, ...]:
        return self.training or self.inputs + self.targets

    # --- what the data defines --------------------------------------------------------------
    def start_from(self, extra: dict) -> None:
        """Take over what the body's folder says of how it is read (its "extra"), where the task's
        options leave it open."""

    def fit(self, records: list[Record]) -> None:
        """Learn from training records what the model must know (its label set)."""

    def n_outputs(self) -> int:
        raise NotImplementedError

    def state(self) -> dict:
        """What a saved model needs to read and decide as it was trained (stored with the checkpoint)."""
        state = {"name": self.name, "pattern": self.framing.pattern, "max_len": self.framing.max_len}
        return state if self.framing.mode is None else {**state, "mode_token": self.framing.mode}

    def body_extra(self) -> dict:
        """What the saved model tells other tools of how its body now reads text (text2text)."""
        return {}

    # --- records -> features -> batches -------------------------------------------------------
    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        raise NotImplementedError

    def encode_all(self, records: list[Record], with_targets: bool) -> list[Feature]:
        """Every record's features; a bad record stops everything before any model work."""
        return [feature for index, record in enumerate(records) for feature in self.encode(record, index, with_targets)]

    def training_features(self, records: list[Record]) -> list[Feature]:
        """The features of training records (for most tasks, those of any labelled record)."""
        return self.encode_all(records, with_targets=True)

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def collate(
        self, features: list[Feature], generator: torch.Generator | None = None, part: slice | None = None
    ) -> TaskBatch:
        """The batch of features `part` of `features` (a process's share keeps whole features: a pair's
        two orders or a question's candidates stay together)."""
        return self.make_batch(features if part is None else features[part], generator)

    def make_batch(self, features: list[Feature], generator: torch.Generator | None = None) -> TaskBatch:
        rows = [row for feature in features for row in feature.rows]
        ids, padding_mask = pad([row.ids for row in rows], self.framing.specials.pad)
        token_types, _ = pad([row.token_types for row in rows], 0)
        batch = TaskBatch(ids, padding_mask, token_types, features)
        if self.lm_weight > 0 and features[0].target is not None:
            texts = [self.framing.strip(row.ids) for row in rows]
            batch.lm = self.lm_objective().prepare([t for t in texts if t] or [[self.framing.specials.unk]], generator)
        return batch

    # --- model and loss -----------------------------------------------------------------------
    def build_model(self, body: nn.Module) -> nn.Module:
        head_class = PooledHead if self.pooled else TokenHead
        return TaskModel(body, head_class(body.config.d_model, self.n_outputs(), body.config.dropout), self.framing)

    def training_module(self, model: nn.Module) -> nn.Module:
        """The trainer optimises the task model itself (train/problem.py)."""
        return model

    def loss(self, outputs, batch: TaskBatch) -> Tensor:
        """The task's loss, plus λ times a language-modelling loss on the same inputs when
        `lm_weight` λ > 0 (GPT-1 §3.2: it improves generalisation and speeds convergence; λ = 0.5)."""
        if batch.lm is None:
            return self.task_loss(outputs, batch)
        scores, lm_logits = outputs
        return self.task_loss(scores, batch) + self.lm_weight * self.lm_objective().loss(lm_logits, batch.lm)

    def task_loss(self, scores: Tensor, batch: TaskBatch) -> Tensor:
        raise NotImplementedError

    def n_targets(self, batch: TaskBatch) -> int:
        return batch.n_targets

    # --- validation (the trainer's problem interface, train/problem.py) ----------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Validation, context) -> dict:
        """The validation loss, teacher forced as in training (the task's own loss, without the
        auxiliary LM loss), and the task's metrics on predictions for the validation records."""
        loss_sum = n_targets = 0.0
        size = context.batch_size
        with evaluation(model):
            with context.autocast():
                for start in range(0, len(data.features), size):
                    batch = self.collate(data.features[start : start + size], torch.Generator().manual_seed(0))
                    batch = batch.to(context.device)
                    batch.lm = None
                    loss_sum += float(self.loss(model(**batch.model_inputs()), batch)) * batch.n_targets
                    n_targets += batch.n_targets
            metrics = self.metrics_of(self.predict(model, data.records, batch_size=size), data.records)
        return {"loss": loss_sum / max(n_targets, 1), **metrics}

    def score(self, result: dict) -> float:
        return -result[self.metric]  # the task's main metric: higher is better

    def summary(self, result: dict) -> str:
        return " | ".join(f"{k} {v:.4f}" for k, v in result.items())

    def lm_objective(self):
        """The body's own kind of objective on the task's texts: next-token prediction on a causal
        stack (GPT-1), masked tokens on a bidirectional stack (BERT) and through an encoder-decoder."""
        if self._lm_objective is None:
            arch, causal_stack = self.framing.arch, self.framing.arch == "stack" and self.framing.pattern == "causal"
            name, pattern = ("clm", "causal") if causal_stack else ("mlm", None if arch == "stack" else "causal")
            vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
            self._lm_objective = make_objective(name, self.framing.specials, vocab_size, arch=arch, pattern=pattern)
        return self._lm_objective

    # --- prediction ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, records: list[Record], batch_size: int = 32, progress=None) -> list[dict]:
        """One prediction (a JSON-ready dict) per record, in order; the record's "id" is carried over.
        `progress(done, total)` is called after each batch, counting features."""
        features = self.encode_all(records, with_targets=False)
        device = next(model.parameters()).device
        outputs: list = []
        with evaluation(model):
            for start in range(0, len(features), batch_size):
                batch = self.collate(features[start : start + batch_size]).to(device)
                outputs += self.split(model(**batch.model_inputs()).float().cpu(), batch)
                if progress is not None:
                    progress(len(outputs), len(features))
        by_record: dict[int, list] = {}
        for feature, output in zip(features, outputs):
            by_record.setdefault(feature.record, []).append((feature, output))
        return [with_id(record, self.decide(record, by_record.get(i, []))) for i, record in enumerate(records)]

    def split(self, scores: Tensor, batch: TaskBatch) -> list:
        """Model scores for a batch -> one output per feature."""
        return list(scores)

    def decide(self, record: Record, outputs: list[tuple[Feature, Any]]) -> dict:
        raise NotImplementedError

    def metrics_of(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        raise NotImplementedError

    def has_targets(self, record: Record) -> bool:
        return all(record.get(column) is not None for column in self.targets)

    def check_targets(self, records: list[Record]) -> bool:
        """Whether every record holds the answer columns (so predictions can be scored); the
        answers found are checked against the model (an unknown label is an error naming its line)."""
        complete = all(self.has_targets(record) for record in records)
        if complete:
            self.encode_all(records, with_targets=True)
        return complete


def with_id(record: Record, prediction: dict) -> dict:
    return {"id": record.get("id"), **prediction} if record.get("id") is not None else prediction
