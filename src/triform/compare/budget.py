"""Compute as tokens x parameters: how many steps a run gets for a budget.

A step's compute is the sum over its real (unpadded) tokens of the non-embedding parameters each
passes through: the stack's for a stack, the encoder's for a source token and the decoder's for a
decoder token of an encoder-decoder. The objective counts it (`Objective.compute`), as it alone knows
what its batches run through. Embedding tables are lookups, not matrix products, and are left out as
in Kaplan et al. 2020 (§2.1).
"""

from __future__ import annotations

import math

import torch

from triform.config import ModelConfig
from triform.models import build_model

SAMPLED_STEPS = 8  # batches prepared to measure the tokens of an average step


def path_parameters(config: ModelConfig) -> dict[str, int]:
    """Non-embedding parameters of each stack a token can pass through: {"stack": N} or
    {"encoder": N_e, "decoder": N_d}."""
    with torch.device("meta"):
        model = build_model(config)
    counts: dict[str, int] = {}
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if id(parameter) in seen or ".embeddings." in f".{name}":
            continue
        seen.add(id(parameter))
        part = name.split(".")[0]
        if part in ("stack", "encoder", "decoder"):
            counts[part] = counts.get(part, 0) + parameter.numel()
    return counts


def compute_per_step(session, batch_size: int, seed: int) -> float:
    """The mean compute of a training step of this session, measured on its first batches."""
    parameters = path_parameters(session.model_config)
    order = session.batch_order(batch_size, seed)
    total = 0.0
    steps = min(SAMPLED_STEPS, order.steps_per_epoch)
    for step in range(steps):
        generator = torch.Generator().manual_seed(seed + step)
        batch = session.objective.prepare(order.examples(step), generator)
        total += session.objective.compute(batch, parameters)
    return total / steps


def steps_for(budget: float, per_step: float) -> int:
    return max(1, math.ceil(budget / per_step))


def task_compute_per_step(features: list, batch_size: int, parameters: dict[str, int]) -> float:
    """The mean compute of a fine-tuning step of a task head on `batch_size` of these features: each
    real token of their rows through every stack of the body (an encoder-decoder reads the same text
    in its encoder and its decoder, tasks/framing.py). The head reads one pooled vector per example
    and is left out, as the embeddings are."""
    tokens = sum(len(row.ids) for feature in features for row in feature.rows) / max(len(features), 1)
    return batch_size * tokens * sum(parameters.values())
