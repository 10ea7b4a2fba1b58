"""The trainer's contract: what it asks of the problem it trains, and what it hands out to evaluation.

A pretraining objective (objectives/base.py) and a fine-tuning task (tasks/base.py) are both a
`Problem`: the trainer collates examples into batches, computes the loss on the model's outputs,
counts the predicted targets, evaluates on validation data and asks which result is best. It knows
nothing else of either (as minGPT's trainer says: nothing here has anything to do with GPT).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from triform.data.batches import evaluation_batches
from triform.train.distributed import Processes


class Batch(Protocol):
    """What the trainer does with a batch: move it, feed it to the model, count its input tokens."""

    n_inputs: int

    def to(self, device: torch.device) -> Batch: ...
    def model_inputs(self) -> dict: ...


class Problem(Protocol):
    def training_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the trainer optimises, checkpoints and calls on each batch's `model_inputs()`: `model`
        itself, or a module of the problem's own that holds `model` as its attribute `model` beside
        modules that train with it (ELECTRA's generator). Model folders hold `model` alone; a
        checkpoint's training state holds the other modules' weights, so that a resumed run has them."""

    def collate(self, examples: list, generator: torch.Generator | None, part: slice | None = None) -> Batch:
        """The batch of this process's share `part` of a global micro-batch of `examples`."""

    def loss(self, outputs: Any, batch: Batch) -> torch.Tensor:
        """The mean loss over the batch's targets."""

    def n_targets(self, batch: Batch) -> int:
        """What the loss averages over (predicted tokens, examples, tagged words)."""

    def evaluate(self, model: torch.nn.Module, data: Any, context: EvalContext) -> dict:
        """Validation figures: "loss" among them where the problem has one on validation data (scored
        pairs of the embed task have none)."""

    def score(self, result: dict) -> float:
        """Lower is better: what picks the best checkpoint."""

    def summary(self, result: dict) -> str:
        """The validation figures as one line of progress."""


def share(n_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """This process's contiguous rows out of `n_rows` (the first ones get one more when uneven)."""
    base, extra = divmod(n_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class EvalContext:
    """What evaluation may use: batches of the validation data split between the processes, sums
    over processes, the run's precision and device."""

    batch_size: int
    limit: int  # batches evaluated, spread over the data (0: all)
    processes: Processes
    autocast: Callable
    device: torch.device
    # called with (batches done, batches in all, examples done) after each batch: `triform eval`'s
    # progress line
    progress: Callable[[int, int, int], None] | None = None

    def batches(self, data) -> Iterator[tuple[int, list, slice, float]]:
        """(batch number, the batch's examples, this process's part of them, its weight). A process
        without rows of a short last batch still runs one row with weight 0, for sharded models."""
        batches = evaluation_batches(data, self.batch_size, self.limit)
        done = 0
        for number, indices in enumerate(batches):
            start, stop = share(len(indices), self.processes.rank, self.processes.world_size)
            part, weight = (slice(start, stop), 1.0) if stop > start else (slice(0, 1), 0.0)
            yield number, [data.example(i) for i in indices], part, weight
            done += len(indices)
            if self.progress is not None:
                self.progress(number + 1, len(batches), done)

    def sum(self, values: list[float]) -> list[float]:
        return self.processes.sum(values)
