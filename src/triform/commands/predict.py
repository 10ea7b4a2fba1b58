"""`triform predict --model runs/sst/best --data test.jsonl --output predictions.jsonl`.

One JSON object per input record, in order, with the record's "id" when it has one. When every
record also holds the answer columns, the task's metrics are printed (and written with
`--metrics`). Everything is checked and predicted before anything is written: a bad record (a
missing column, an unknown label) stops the command with its file and line, and no output.
"""

from __future__ import annotations

from typing import Optional

from triform.commands.textio import add_quantize_argument


def add_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        type=str,
        required=True,
        help="a folder written by `triform finetune` (run_dir/best or run_dir/model)",
    )
    parser.add_argument("--data", type=str, required=True, help="records to predict: .jsonl, .csv, .tsv or .parquet")
    parser.add_argument(
        "--output", type=Optional[str], default=None, help="predictions as JSONL (default: standard output)"
    )
    parser.add_argument("--metrics", type=Optional[str], default=None, help="also write the metrics here, as JSON")
    parser.add_argument(
        "--columns",
        type=Optional[dict[str, str]],
        default=None,
        help='the file\'s column for a task column, e.g. \'{"label": "genre"}\'',
    )
    parser.add_argument("--batch_size", type=int, default=32, help="features per forward pass")
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1, ...")
    add_quantize_argument(parser)


def run(args) -> int:
    import json
    import sys
    import time

    from triform.errors import TriformError
    from triform.kernels.int8 import check_scheme, quantize
    from triform.progress import Throttle, duration, say
    from triform.tasks import read_records, write_jsonl
    from triform.tasks.checkpoint import load_task_model

    if args.batch_size < 1:
        raise TriformError(f"batch_size: expected a positive integer, got {args.batch_size}")
    if args.quantize is not None:
        check_scheme(args.quantize)
    model, task, _ = load_task_model(args.model, device=args.device)
    if args.quantize is not None:
        quantize(model, args.quantize)
    records = read_records(args.data, task.inputs, task.check_columns(args.columns))
    scored = task.check_targets(records)  # before any output: an unknown label names its line
    started, throttle = time.monotonic(), Throttle(5.0)

    def progress(done: int, total: int) -> None:
        if throttle(force=done == total) and total > args.batch_size:
            rate = done / max(time.monotonic() - started, 1e-9)
            say(f"predicting: {done}/{total} inputs | {rate:.0f}/s | ETA {duration((total - done) / max(rate, 1e-9))}")

    predictions = task.predict(model, records, batch_size=args.batch_size, progress=progress)
    elapsed = time.monotonic() - started
    metrics = task.metrics_of(predictions, records) if scored else None
    lines = (json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    if args.output is None:
        sys.stdout.writelines(lines)
    else:
        write_jsonl(args.output, predictions)
    say(
        f"{len(records)} records predicted in {elapsed:.1f}s ({len(records) / max(elapsed, 1e-9):.0f} records/s)"
        + (f"; predictions in {args.output}" if args.output else "")
    )
    if metrics is not None:
        if args.metrics:
            write_jsonl(args.metrics, [metrics])
        say("metrics: " + json.dumps(metrics))
    return 0
