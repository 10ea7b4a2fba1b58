"""Multiple choice: the context and each candidate read together, one score per candidate, a
softmax over the candidates (GPT-1, Radford et al. 2018 §3.3: ``[start] context [delim] answer
[extract]``; BERT on SWAG, Devlin et al. 2019 §4.4). Questions may have different numbers of choices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from triform.tasks.base import Feature, Task, TaskBatch
from triform.tasks.data import Record
from triform.tasks.metrics import accuracy

MIN_CHOICES = 2


class Choice(Task):
    name = "choice"
    inputs = ("context", "choices")
    targets = ("label",)
    metric = "accuracy"

    def n_outputs(self) -> int:
        return 1

    def choices(self, record: Record) -> list[str]:
        """A JSON list under "choices"; in CSV / TSV, the non-empty cells of columns choice0, choice1, ..."""
        if record.has_lists:
            choices = record.require("choices")
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise record.error(f"'choices' must be a list of texts, got {choices!r}")
        else:
            choices, k = [], 0
            while f"choice{k}" in record.values:
                choices.append(record.values[f"choice{k}"])
                k += 1
            if not choices:
                raise record.error(f"no 'choice0' column; found {sorted(record.values)}")
            choices = [c for c in choices if c.strip()]
        if len(choices) < MIN_CHOICES:
            raise record.error(f"{len(choices)} choice(s); a multiple-choice question needs at least {MIN_CHOICES}")
        return choices

    def target(self, record: Record, n_choices: int) -> int:
        value = record.require("label")
        try:
            index = int(value)
            if index != value and str(index) != str(value).strip():
                raise ValueError
        except (TypeError, ValueError):
            raise record.error(f"'label' must be the index of the right choice (0, 1, ...), got {value!r}") from None
        if not 0 <= index < n_choices:
            raise record.error(f"'label' {index} is not the index of one of the {n_choices} choices")
        return index

    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        context = self.text(record, "context")
        choices = self.choices(record)
        context_ids = self.tokens(context)
        rows = [self.framing.join(context_ids, self.tokens(choice)) for choice in choices]
        return [Feature(index, rows, self.target(record, len(choices)) if with_targets else None)]

    def make_batch(self, features: list[Feature], generator=None) -> TaskBatch:
        batch = super().make_batch(features, generator)
        if features[0].target is not None:
            batch.targets = torch.tensor([f.target for f in features])
        return batch

    def grid(self, scores: Tensor, batch: TaskBatch) -> Tensor:
        """(N_rows, 1) candidate scores -> (B, most choices), -inf where a question has fewer."""
        sizes = [len(f.rows) for f in batch.features]
        grid = scores.new_full((len(sizes), max(sizes)), float("-inf"))
        row = 0
        for question, size in enumerate(sizes):
            grid[question, :size] = scores[row : row + size, 0]
            row += size
        return grid

    def task_loss(self, scores: Tensor, batch: TaskBatch) -> Tensor:
        return F.cross_entropy(self.grid(scores.float(), batch), batch.targets)

    def split(self, scores: Tensor, batch: TaskBatch) -> list:
        return [row[: len(f.rows)] for row, f in zip(self.grid(scores, batch), batch.features)]

    def decide(self, record: Record, outputs) -> dict:
        ((_, scores),) = outputs
        probabilities = scores.softmax(-1).tolist()
        return {"label": max(range(len(probabilities)), key=probabilities.__getitem__), "probabilities": probabilities}

    def metrics_of(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        references = [self.target(r, len(self.choices(r))) for r in records]
        return {"accuracy": accuracy([p["label"] for p in predictions], references)}
