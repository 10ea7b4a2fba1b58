"""`triform compare --data corpus.txt`: pretrain every allowed architecture x objective pair with the
same compute, fine-tune each for next-token, masked-token and a seq2seq task (and classification,
given `--labels`), each task with its own fraction of the budget, and tabulate the scores with error
bars over seeds (the T5 paper's Table 2 in miniature)."""

from __future__ import annotations

from typing import Literal, Optional


def add_arguments(parser) -> None:
    parser.add_argument(
        "--data", type=str, required=True, help="text to train on: a file, folder or glob (as triform train reads it)"
    )
    parser.add_argument(
        "--valid", type=Optional[str], default=None, help="held-out text (default: every 20th document of --data)"
    )
    parser.add_argument(
        "--out",
        "--output",
        type=str,
        default="runs/compare",
        help="folder of the table, plot and runs; rerun to continue",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=5e10,
        help="pretraining compute of every pair: tokens x non-embedding parameters they pass through",
    )
    parser.add_argument(
        "--finetune",
        type=str,
        default="0.25",
        help="fine-tuning budget of each task as a fraction of --budget: one number for all, or per task, "
        "e.g. restore=6,next=0.25,masked=0.25,genre=0.5 (a bare number for the rest) or '{\"restore\": 6}'",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per pair, with seeds seed, seed + 1, ...; they give the error bars"
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed; also the seed of the data sample")
    parser.add_argument(
        "--patterns",
        type=Literal["default", "all"],
        default="default",
        help="each pair at its default attention pattern, or at every allowed one",
    )
    parser.add_argument(
        "--pairs",
        type=Optional[list[str]],
        default=None,
        help="only these, as arch:objective[(options)][:pattern], e.g. "
        '["stack:clm", "encoder-decoder:span", "stack:mlm(rate=0.3):causal"]',
    )
    add_label_arguments(parser)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process with one thread")
    for name, default, what in (
        ("d_model", 64, "model width"),
        ("n_layers", 2, "layers per stack"),
        ("max_len", 64, "tokens per example"),
        ("vocab_size", 2048, "BPE vocabulary trained on --data"),
        ("batch_size", 16, "examples per step"),
        ("documents", 100_000, "documents of --data read at most"),
    ):
        parser.add_argument(f"--{name}", type=int, default=default, help=what)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warmup, then cosine decay)")


def add_label_arguments(parser) -> None:
    """The classification task on labelled records (compare/labelled.py)."""
    parser.add_argument(
        "--labels",
        type=Optional[str],
        default=None,
        help="labelled records (JSONL, CSV, TSV, parquet with text and label) for a classification task",
    )
    parser.add_argument(
        "--labels_valid", type=Optional[str], default=None, help="its held-out records (default: every 10th)"
    )
    parser.add_argument(
        "--labels_columns",
        type=Optional[dict[str, str]],
        default=None,
        help='the file\'s column for text or label, e.g. \'{"label": "genre"}\'',
    )
    parser.add_argument("--labels_name", type=str, default="genre", help="the classification task's name")
    parser.add_argument("--eval_labels", type=int, default=2000, help="held-out labelled records scored at most")


def run(args) -> int:
    from triform.compare import Settings, compare

    names = (
        "data",
        "valid",
        "out",
        "budget",
        "finetune",
        "repeats",
        "seed",
        "patterns",
        "pairs",
        "jobs",
        "d_model",
        "n_layers",
        "max_len",
        "vocab_size",
        "batch_size",
        "documents",
        "lr",
        "labels",
        "labels_valid",
        "labels_columns",
        "labels_name",
        "eval_labels",
    )
    outputs = compare(Settings(**{name: args[name] for name in names}))
    print(outputs["table"] + "\n\n" + outputs["findings"])
    return 0
