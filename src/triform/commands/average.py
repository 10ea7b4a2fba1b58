"""`triform average --run runs/mt --last 5 --output runs/mt/average`: one model folder holding the mean
of the parameters of a run's last checkpoints (Vaswani et al. 2017 §6.1 average the last 5), or of
the model folders given with `--checkpoints '[a, b, c]'`. The run must have kept them: train it with
`--train.keep_last 5`. The folder written loads, generates, translates and evaluates like any other."""

from __future__ import annotations

from typing import Optional


def add_arguments(parser) -> None:
    parser.add_argument("--run", type=Optional[str], default=None, help="a run folder: average its last checkpoints")
    parser.add_argument("--last", type=int, default=5, help="with --run: how many of its newest checkpoints")
    parser.add_argument(
        "--checkpoints",
        type=Optional[list[str]],
        default=None,
        help="model folders to average instead of --run, as a list: '[runs/a/best, runs/b/best]'",
    )
    parser.add_argument("--output", type=str, required=True, help="the model folder to write (atomically)")


def run(args) -> int:
    from pathlib import Path

    from triform.errors import TriformError
    from triform.progress import say
    from triform.train.average import average_checkpoints, last_checkpoints, steps_of

    if (args.run is None) == (args.checkpoints is None):
        raise TriformError("expected either --run RUN_DIR (with --last K) or --checkpoints '[DIR, DIR, ...]'")
    folders = last_checkpoints(args.run, args.last) if args.run is not None else args.checkpoints
    written = average_checkpoints(folders, args.output)
    steps = ", ".join(str(step) for step in steps_of([Path(folder) for folder in folders]))
    say(f"average: {len(folders)} checkpoints (steps {steps}) written to {written}")
    return 0
