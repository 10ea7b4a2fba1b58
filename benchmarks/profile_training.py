"""Where a training step of benchmarks/run.py's cases spends its time: the share of matrix products,
and the operations that take the rest (what bounds model FLOPs utilisation below the matmul rate).

    .venv/bin/python benchmarks/profile_training.py [--case gpt] [--rows 12] [--threads 1] [--keep-freed-memory]
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import training
from speed.models import model_specs
from speed.profiling import profiled

from triform.kernels.host_memory import freed_memory_kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["gpt", "bert", "bart"], default="gpt")
    parser.add_argument("--rows", type=int, default=12, help="operations listed, by their own time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="as --train.keep_freed_memory true trains (off by default)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = model_specs()[args.case]
    variants, _ = training.training_variants(spec, training.SHAPES[args.case], False)
    with freed_memory_kept(args.keep_freed_memory):
        for name in (name for name in variants if name.startswith("triform")):  # bf16 where it is native
            variants[name]()  # warm-up: first-call allocations and weight casts
            faults, system = page_faults(variants[name])
            summary = profiled(variants[name])
            total, products = summary.operators_s, summary.products_s
            print(
                f"{args.case}-train, {name}: {total * 1e3:.0f} ms of operator time, matrix products "
                f"{100 * products / total:.0f} %; an unprofiled step took {faults:,} page faults and "
                f"{system:.2f} s of system time"
            )
            print(summary.events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


def page_faults(run) -> tuple[int, float]:
    """(minor page faults, system seconds) of one call of `run`: the kernel zeroing fresh pages for
    the allocator, which --keep-freed-memory removes (kernels/host_memory.py)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime


if __name__ == "__main__":
    main()
