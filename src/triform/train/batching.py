"""From examples to the rows of a Batch that this process trains on.

Every process prepares the whole global micro-batch with the same generator and keeps its own rows,
so the masks an objective draws do not depend on how many processes share the work.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from triform.objectives import Batch


def word_starts(example: list[int], table: torch.Tensor, special: frozenset[int]) -> list[bool]:
    """Whether each token begins a word; the token after a special token always does."""
    starts = table[torch.tensor(example, dtype=torch.long)].tolist()
    for i in range(1, len(example)):
        if example[i - 1] in special:
            starts[i] = True
    if starts:
        starts[0] = True
    return starts


def prepare(objective, examples: list, generator: torch.Generator, word_table: torch.Tensor | None = None) -> Batch:
    if getattr(objective, "whole_word", False):
        special = objective.specials.all_ids
        starts = [word_starts(e, word_table, special) for e in examples]
        return objective.prepare(examples, generator, word_starts=starts)
    return objective.prepare(examples, generator)


def rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows start:stop of every per-example tensor of `batch`."""
    sliced = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor):
            sliced[f.name] = value[start:stop]
    return replace(batch, **sliced)


def share(n_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """This process's contiguous rows out of `n_rows` (the first ones get one more when uneven)."""
    base, extra = divmod(n_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
