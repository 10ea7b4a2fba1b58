"""`triform demo`: train a tiny GPT, BERT and encoder-decoder (and a cross-over) from the same parts,
show what each does, and write an HTML report with loss curves and attention-pattern pictures.

No download and no data of your own: the text is the docstrings of Python's standard library, the
translation task (English number words -> German) is made by code. `--data` trains on your text.
"""

from __future__ import annotations

from typing import Literal, Optional


def add_arguments(parser) -> None:
    parser.add_argument(
        "--out", "--output", type=str, default="runs/demo", help="folder for the report, pictures and models"
    )
    parser.add_argument(
        "--size",
        type=Literal["quick", "default", "large"],
        default="default",
        help="quick: seconds (a smoke test); default: about two minutes on two CPU cores; large: longer, better",
    )
    parser.add_argument(
        "--data",
        type=Optional[str],
        default=None,
        help="your own text (a file, folder or glob, as triform train reads it) instead of the docstrings",
    )
    parser.add_argument(
        "--crossover",
        type=Literal["mlm-causal", "seq2seq-prefix", "none"],
        default="mlm-causal",
        help="the fourth model: BERT's objective under a causal pattern, or translation by one stack",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the initial weights and the batches")
    parser.add_argument("--threads", type=Optional[int], default=None, help="torch threads (default: torch's choice)")


def run(args) -> int:
    import torch

    from triform.demo import run_demo
    from triform.errors import TriformError

    if args.threads is not None:
        if args.threads < 1:
            raise TriformError(f"--threads: expected a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    run_demo(args.out, size=args.size, data=args.data, crossover=args.crossover, seed=args.seed)
    return 0
