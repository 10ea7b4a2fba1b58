"""Where a training step of benchmarks/run.py's cases spends its time: the share of matrix products,
and the operations that take the rest (what bounds model FLOPs utilisation below the matmul rate).

    .venv/bin/python benchmarks/profile_training.py [--case gpt] [--rows 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import training
from speed.models import model_specs
from speed.profiling import PRODUCTS

from triform.kernels.host_memory import freed_memory_kept
from triform.train.config import LoopConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["gpt", "bert", "bart"], default="gpt")
    parser.add_argument("--rows", type=int, default=12, help="operations listed, by their own time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = model_specs()[args.case]
    variants, _ = training.training_variants(spec, training.SHAPES[args.case], False)
    kept = ExitStack()
    for name in ("triform fp32", "triform bf16"):
        kept.enter_context(freed_memory_kept(LoopConfig.keep_freed_memory))  # as `triform train` runs steps
        variants[name]()  # warm-up: first-call allocations and weight casts
        with profile() as profiler:
            variants[name]()
        events = profiler.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS)
        print(
            f"{args.case}-train, {name}: {total / 1e3:.0f} ms of operator time, matrix products "
            f"{100 * products / total:.0f} %"
        )
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    kept.close()


if __name__ == "__main__":
    main()
