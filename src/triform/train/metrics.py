"""Metrics of a run: one JSON object per line in `metrics.jsonl` (`loss.png` is drawn from it by train/plots.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from triform.io import write_jsonl


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
        write_jsonl(self.path, [r for r in self.read() if r.get("step", 0) <= step])
