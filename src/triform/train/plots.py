"""Loss curves of runs, drawn with matplotlib's Agg backend into a PNG written atomically.

One `plot_losses` draws the trainer's `loss.png` (one run, its learning rate beneath) and the demo's
`losses.png` (one panel per model, each with the loss of a uniform guess); `pyplot` and `save_figure`
serve every other picture (`triform inspect --png`, the comparison's bars).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from triform.io import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend: pictures are files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a figure atomically and close it."""
    try:
        return atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=dpi, bbox_inches="tight"))
    finally:
        pyplot().close(figure)


@dataclass(frozen=True)
class Curves:
    """One panel: the metrics records of a run, its title, and the loss a uniform guess would have."""

    records: list[dict]
    title: str = ""
    guess: float | None = None  # drawn as a dashed line: a model that learned is well below it


def plot_losses(
    runs: Sequence[Curves] | list[dict], path: str | os.PathLike, title: str = "", *, learning_rate: bool = True
) -> Path:
    """Train and validation loss against the step, one panel per run, and beneath each its learning
    rate (`learning_rate`). `runs` is one Curves per panel, or the records of one run, then titled
    `title`; with several panels `title` heads the figure."""
    if not runs or isinstance(runs[0], dict):
        runs, title = [Curves(list(runs), title)], ""
    plt = pyplot()
    rows = 2 if learning_rate else 1
    figure, axes = plt.subplots(
        rows,
        len(runs),
        figsize=(max(7.0, 3.6 * len(runs)), 5.5 if learning_rate else 3.2),
        sharex="col",
        squeeze=False,
        **({"height_ratios": [3, 1]} if learning_rate else {}),
    )
    for column, run in enumerate(runs):
        draw_losses(axes[0][column], run)
        if learning_rate:
            draw_learning_rate(axes[1][column], run)
    for axis in axes[-1]:
        axis.set_xlabel("optimizer step")
    axes[0][0].set_ylabel("loss (nats per predicted token)")
    axes[0][0].legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def split(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if r.get("split") == name]


def draw_losses(axis, run: Curves) -> None:
    train = split(run.records, "train")
    valid = [r for r in split(run.records, "valid") if "loss" in r]  # an embedding task validates without one
    if train:
        axis.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1, label="train")
    if valid:
        axis.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", linewidth=1.5, label="validation")
    for name in sorted({name for r in train for name in r.get("losses", {})}):  # each part of a mixture
        drawn = [r for r in train if name in r.get("losses", {})]
        axis.plot([r["step"] for r in drawn], [r["losses"][name] for r in drawn], linewidth=0.8, alpha=0.7, label=name)
    if run.guess is not None:
        axis.axhline(run.guess, linestyle="--", color="gray", linewidth=1, label="uniform guess")
        axis.set_ylim(bottom=0)  # the gap to the guess reads true only from zero
    axis.set_title(run.title, fontsize=9)
    axis.grid(alpha=0.3)


def draw_learning_rate(axis, run: Curves) -> None:
    train = split(run.records, "train")
    if train:
        axis.plot([r["step"] for r in train], [r["lr"] for r in train], color="gray", linewidth=1)
    axis.set_ylabel("learning rate")
    axis.grid(alpha=0.3)
