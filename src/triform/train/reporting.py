"""Where a run's progress goes: reporters the trainer calls at the start, after logged steps and
validations, for messages and at the end. The trainer computes the figures; reporters show or store
them: log lines, a progress bar (tqdm), metrics.jsonl with loss.png, TensorBoard.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from triform.errors import TriformError
from triform.progress import count, duration, say
from triform.train.metrics import MetricsLog
from triform.train.plots import plot_losses

PLOT_EVERY = 30.0  # seconds between redraws of loss.png at validations (always drawn at the end)


@dataclass
class RunStart:
    description: str  # what is trained, on what, where
    total_steps: int
    start_step: int  # above 0 when resumed
    run_dir: Path
    title: str  # of the loss plot


class Reporter:
    """Does nothing; a reporter overrides what it shows."""

    def start(self, run: RunStart) -> None:
        pass

    def train(self, record: dict) -> None:
        """A logged step: step, loss, lr, tokens, tokens_per_s, grad_norm, elapsed_s, eta_s, and with a
        mixture `losses`, the loss of each part drawn in the window."""

    def valid(self, record: dict, summary: str, improved: bool) -> None:
        """A validation: its figures, as one line, and whether it is the best so far."""

    def message(self, line: str) -> None:
        pass

    def finish(self, outcome: str) -> None:
        pass


class Reporters(Reporter):
    def __init__(self, reporters: list[Reporter]):
        self.reporters = list(reporters)

    def start(self, run: RunStart) -> None:
        for reporter in self.reporters:
            reporter.start(run)

    def train(self, record: dict) -> None:
        for reporter in self.reporters:
            reporter.train(record)

    def valid(self, record: dict, summary: str, improved: bool) -> None:
        for reporter in self.reporters:
            reporter.valid(record, summary, improved)

    def message(self, line: str) -> None:
        for reporter in self.reporters:
            reporter.message(line)

    def finish(self, outcome: str) -> None:
        for reporter in self.reporters:
            reporter.finish(outcome)


def train_line(record: dict, total_steps: int) -> str:
    parts = "".join(f" | {name} {loss:.3f}" for name, loss in record.get("losses", {}).items())
    return (
        f"step {record['step']}/{total_steps} | loss {record['loss']:.4f}{parts} | lr {record['lr']:.2e} | "
        f"{count(record['tokens_per_s'])} tok/s | {duration(record['elapsed_s'])} elapsed | "
        f"ETA {duration(record['eta_s'])}"
    )


class LogLines(Reporter):
    """One line per logged step and validation, on stderr: what `triform train` prints."""

    def __init__(self, stream=None):
        self.stream, self.total = stream, 0

    def start(self, run: RunStart) -> None:
        self.total = run.total_steps
        say(run.description, self.stream)

    def train(self, record: dict) -> None:
        say(train_line(record, self.total), self.stream)

    def valid(self, record: dict, summary: str, improved: bool) -> None:
        say(f"validation at step {record['step']}: {summary}" + (" | best so far" if improved else ""), self.stream)

    def message(self, line: str) -> None:
        say(line, self.stream)


class ProgressBar(Reporter):
    """A tqdm bar of the steps with the loss and tokens/s; lines are kept (`lines`) instead of printed.
    Off a terminal the bar is redrawn every `interval` seconds, so that logs stay short."""

    def __init__(self, label: str, *, enabled: bool = True, interval: float = 10.0, stream=None):
        self.label, self.enabled, self.interval = label, enabled, interval
        self.stream = stream or sys.stderr
        self.lines: list[str] = []
        self.bar = None

    def start(self, run: RunStart) -> None:
        from tqdm import tqdm

        self.lines.append(run.description)
        live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(
            total=run.total_steps,
            initial=run.start_step,
            desc=self.label,
            unit="step",
            file=self.stream,
            disable=not self.enabled,
            mininterval=0.1 if live else self.interval,
            dynamic_ncols=live,
            leave=True,
        )

    def train(self, record: dict) -> None:
        self.lines.append(train_line(record, self.bar.total))
        self.bar.set_postfix_str(f"loss {record['loss']:.3f}, {count(record['tokens_per_s'])} tok/s", refresh=False)
        self.bar.update(record["step"] - self.bar.n)

    def valid(self, record: dict, summary: str, improved: bool) -> None:
        self.lines.append(f"validation at step {record['step']}: {summary}")

    def message(self, line: str) -> None:
        self.lines.append(line)

    def finish(self, outcome: str) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsFile(Reporter):
    """metrics.jsonl (one record per logged step and validation) and loss.png drawn from it."""

    def __init__(self, run_dir: Path):
        self.log = MetricsLog(Path(run_dir) / "metrics.jsonl")
        self.plot_path = Path(run_dir) / "loss.png"
        self.title, self.drawn = "", -float("inf")

    def start(self, run: RunStart) -> None:
        self.title = run.title
        # A resumed run rewrites what the stopped one logged past its checkpoint; a new one starts afresh.
        self.log.keep_until(run.start_step)

    def train(self, record: dict) -> None:
        self.log.write({"split": "train", **record})

    def valid(self, record: dict, summary: str, improved: bool) -> None:
        self.log.write({"split": "valid", **record})
        if time.monotonic() - self.drawn >= PLOT_EVERY:
            self.draw()

    def draw(self) -> None:
        records = self.log.read()
        if records:
            plot_losses(records, self.plot_path, self.title)
            self.drawn = time.monotonic()

    def finish(self, outcome: str) -> None:
        self.draw()


class TensorBoard(Reporter):
    """The same figures as TensorBoard scalars, under `run_dir/tensorboard` (torch.utils.tensorboard)."""

    SCALARS = ("loss", "lr", "tokens_per_s", "grad_norm")

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TriformError(
                "train.tensorboard: needs the tensorboard package (pip install 'triform[tensorboard]')"
            ) from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def train(self, record: dict) -> None:
        for name in self.SCALARS:
            self.writer.add_scalar(f"train/{name}", record[name], record["step"])
        for name, loss in record.get("losses", {}).items():  # each part of a mixture
            self.writer.add_scalar(f"train/loss/{name}", loss, record["step"])

    def valid(self, record: dict, summary: str, improved: bool) -> None:
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"valid/{name}", value, record["step"])

    def message(self, line: str) -> None:
        pass

    def finish(self, outcome: str) -> None:
        self.writer.flush()
        self.writer.close()


def standard_reporters(run_dir: Path, *, tensorboard: bool = False, progress: Reporter | None = None) -> Reporters:
    """What a run writes and shows: metrics.jsonl and loss.png, TensorBoard if asked, and progress
    as log lines unless another reporter (a bar) shows it."""
    reporters = [MetricsFile(run_dir), progress or LogLines()]
    if tensorboard:
        reporters.append(TensorBoard(run_dir))
    return Reporters(reporters)
