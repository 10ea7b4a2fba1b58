"""Metrics of a run: one JSON object per line in `metrics.jsonl`, and `loss.png` drawn from it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl, or of the one in a run folder, in order ([] before the first)."""
    path = Path(path)
    path = path / "metrics.jsonl" if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class MetricsLog:
    """Appends records to a JSONL file; only the main process writes."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        return read_metrics(self.path)

    def keep_until(self, step: int) -> None:
        """Drop records after `step`: a resumed run rewrites what the stopped one logged past its checkpoint."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(temporary, self.path)


def plot_losses(records: list[dict], path: Path, title: str = "") -> None:
    """Train and validation loss against the step, and the learning rate beneath; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") == "valid"]
    figure, (loss_axis, lr_axis) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=[3, 1])
    if train:
        loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", linewidth=1)
    if valid:
        loss_axis.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="validation", linewidth=1.5)
    loss_axis.set_ylabel("loss (nats per token)")
    loss_axis.set_title(title)
    loss_axis.grid(alpha=0.3)
    loss_axis.legend()
    if train:
        lr_axis.plot([r["step"] for r in train], [r["lr"] for r in train], color="gray", linewidth=1)
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("optimizer step")
    lr_axis.grid(alpha=0.3)
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)
