"""A model's mode for a stretch of code."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluation(model: nn.Module):
    """Evaluation mode (no dropout) for the duration; the model's mode is restored, even on an error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
