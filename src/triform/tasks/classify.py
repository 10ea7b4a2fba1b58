"""Sequence classification and regression, on one text (`classify`) or a pair of texts (`pair`).

Scores come from the pooled summary of the sequence (see `framing.py`). For a pair read by a causal
stack, the order of the two texts is arbitrary but the reading is not, so both orders are encoded
and their summaries added before the head (GPT-1, Radford et al. 2018 §3.3, on similarity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from triform.tasks.base import Feature, Task, TaskBatch
from triform.tasks.data import Record
from triform.tasks.labels import Labels
from triform.tasks.metrics import accuracy, macro_f1, pearson, spearman


@dataclass(frozen=True)
class ClassifyOptions:
    regression: bool = False  # one number per example (mean squared error), not a label


@dataclass(frozen=True)
class PairOptions:
    regression: bool = False
    both_orders: bool | None = None  # read both orders and add the summaries (None: on a causal stack)


class Classify(Task):
    name = "classify"
    Options = ClassifyOptions
    inputs = ("text",)
    targets = ("label",)
    metric = "accuracy"  # "pearson" for regression

    def __init__(
        self, framing, tokenizer, *, regression: bool = False, labels: list | None = None, lm_weight: float = 0.0
    ):
        super().__init__(framing, tokenizer, lm_weight=lm_weight)
        self.regression = regression
        self.labels = Labels(labels) if labels is not None else None
        if regression:
            self.metric = "pearson"

    def fit(self, records: list[Record]) -> None:
        if not self.regression:
            self.labels = Labels.read(records, "label")

    def n_outputs(self) -> int:
        if self.regression:
            return 1
        if self.labels is None:
            raise RuntimeError("the label set is unknown: call fit(records) first")
        return len(self.labels)

    def state(self) -> dict:
        labels = None if self.regression else self.labels.values
        return {**super().state(), "regression": self.regression, "labels": labels}

    def texts(self, record: Record) -> list[str]:
        return [self.text(record, column) for column in self.inputs]

    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        parts = [self.tokens(text) for text in self.texts(record)]
        target = self.target(record) if with_targets else None
        return [Feature(index, [self.framing.join(*parts)], target)]

    def target(self, record: Record) -> float | int:
        value = record.require("label")
        if not self.regression:
            return self.labels.id(value, record)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise record.error(f"'label' must be a number for regression, got {value!r}") from None

    def make_batch(self, features: list[Feature], generator=None) -> TaskBatch:
        batch = super().make_batch(features, generator)
        batch.combine = len(features[0].rows)
        if features[0].target is not None:
            batch.targets = torch.tensor(
                [f.target for f in features], dtype=torch.float if self.regression else torch.long
            )
        return batch

    def task_loss(self, scores: Tensor, batch: TaskBatch) -> Tensor:
        if self.regression:
            return F.mse_loss(scores.squeeze(-1).float(), batch.targets)
        return F.cross_entropy(scores.float(), batch.targets)

    def decide(self, record: Record, outputs) -> dict:
        ((_, scores),) = outputs
        if self.regression:
            return {"label": float(scores[0])}
        probabilities = scores.softmax(-1).tolist()
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return {"label": self.labels[best], "probabilities": dict(zip(map(str, self.labels.values), probabilities))}

    def metrics_of(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        references = [self.target(record) for record in records]
        if self.regression:
            predicted = [p["label"] for p in predictions]
            mse = sum((p - r) ** 2 for p, r in zip(predicted, references)) / len(references)
            return {"pearson": pearson(predicted, references), "spearman": spearman(predicted, references), "mse": mse}
        predicted = [self.labels.index[p["label"]] for p in predictions]
        return {"accuracy": accuracy(predicted, references), "macro_f1": macro_f1(predicted, references)}


class Pair(Classify):
    name = "pair"
    Options = PairOptions
    inputs = ("text_a", "text_b")

    def __init__(self, framing, tokenizer, *, both_orders: bool | None = None, **options):
        super().__init__(framing, tokenizer, **options)
        causal_stack = framing.arch == "stack" and framing.pattern == "causal"
        self.both_orders = causal_stack if both_orders is None else both_orders

    def state(self) -> dict:
        return {**super().state(), "both_orders": self.both_orders}

    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        a, b = (self.tokens(text) for text in self.texts(record))
        rows = [self.framing.join(a, b)] + ([self.framing.join(b, a)] if self.both_orders else [])
        return [Feature(index, rows, self.target(record) if with_targets else None)]
