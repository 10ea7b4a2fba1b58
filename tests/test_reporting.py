"""Where a run's progress goes: a tqdm bar, log lines, metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import io
from pathlib import Path

from training_helpers import train_args, write_text

from triform.cli import main
from triform.train.metrics import read_metrics
from triform.train.reporting import ProgressBar, RunStart


def run_start(total: int) -> RunStart:
    return RunStart("training a stack", total, 0, Path("."), "title")


def record(step: int) -> dict:
    return dict(
        step=step,
        loss=5.0 / step,
        lr=1e-3,
        tokens=64 * step,
        tokens_per_s=1000.0,
        grad_norm=1.0,
        elapsed_s=step,
        eta_s=10 - step,
    )


def test_the_bar_reaches_the_last_step_and_keeps_the_lines_it_does_not_print():
    stream = io.StringIO()
    bar = ProgressBar("gpt", stream=stream, interval=0)
    bar.start(run_start(10))
    for step in (5, 10):
        bar.train(record(step))
    bar.valid({"step": 10, "loss": 0.5}, "loss 0.5000", improved=True)
    bar.message("done")
    bar.finish("done")
    shown = stream.getvalue()
    assert "gpt" in shown and "10/10" in shown and "loss 0.500" in shown
    assert bar.lines[0] == "training a stack" and bar.lines[-1] == "done"
    assert "validation at step 10: loss 0.5000" in bar.lines and "step 5/10 | loss 1.0000" in bar.lines[1]


def test_a_disabled_bar_prints_nothing():
    stream = io.StringIO()
    bar = ProgressBar("gpt", stream=stream, enabled=False)
    bar.start(run_start(3))
    bar.train(record(3))
    bar.finish("done")
    assert stream.getvalue() == "" and len(bar.lines) == 2


def test_tensorboard_events_hold_the_figures_of_metrics_jsonl(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, valid = write_text(tmp_path / "train.txt", 120), write_text(tmp_path / "valid.txt", 20, seed=1)
    run = tmp_path / "run"
    argv = train_args(
        run,
        train,
        valid,
        4,
        "--preset",
        "tiny-gpt",
        "--train.log_every",
        "2",
        "--train.eval_every",
        "4",
        "--train.tensorboard",
        "true",
    )
    assert main(argv) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    recorded = [(r["step"], r["loss"]) for r in read_metrics(run) if r["split"] == "train"]
    assert [s for s, _ in losses] == [s for s, _ in recorded] == [2, 4]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(losses, recorded))
    assert [e.step for e in events.Scalars("valid/loss")] == [4] and "valid/perplexity" in events.Tags()["scalars"]
