"""Where a decoding step of benchmarks/run.py's cases spends its time, triform's and transformers':
the step unprofiled, its matrix products and its other operators under torch.profiler, the
operators per step, and the time outside any operator (Python, module calls, dispatch). With the
weight-bytes / bandwidth bound beside it, this is what bounds decoding below memory speed.

    .venv/bin/python benchmarks/profile_decoding.py [--case gpt-greedy-b1] [--rows 12] [--threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import decoding
from speed.machine import bandwidth
from speed.models import model_specs
from speed.profiling import profiled
from speed.report import bound_ms

from triform.kernels.machine import this_machine

CASES = [f"{model}-{strategy}" for model in ("gpt", "bart") for strategy in decoding.STRATEGIES]


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up: kernel choices, the bf16 twin, first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, default="gpt-greedy-b1")
    parser.add_argument("--rows", type=int, default=12, help="operations listed, by their own time")
    parser.add_argument("--repeats", type=int, default=5, help="unprofiled runs, the median taken")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also triform's fp32 steps compiled")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, strategy = args.case.split("-", 1)
    spec = model_specs()[model]
    shape = decoding.SHAPES[model]
    variants, info = decoding.decoding_variants(spec, shape, strategy, args.compile)
    read_gb_s = bandwidth()["read_gb_s"]
    print(
        f"{args.case} on {this_machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; {shape.new_tokens} steps; memory read bandwidth {read_gb_s:.1f} GB/s"
    )
    default = next(name for name in variants if "default" in name)
    compiled = [decoding.COMPILED] if args.compile else []
    for name in dict.fromkeys([default, "triform fp32", *compiled, "transformers fp32"]):
        step_ms = 1e3 * median_seconds(variants[name], args.repeats) / shape.new_tokens
        summary = profiled(variants[name])
        operators, products = (1e3 * s / shape.new_tokens for s in (summary.operators_s, summary.products_s))
        count = summary.count / shape.new_tokens
        bound = bound_ms(info["weights_per_step"], "bf16" if "bf16" in name else "fp32", read_gb_s)
        print(
            f"\n{name}: {step_ms:.2f} ms a step unprofiled (the weights' bound {bound:.2f} ms); under the profiler "
            f"{products:.2f} ms in matrix products, {operators - products:.2f} ms in other operators, "
            f"{count:.0f} operators a step; outside any operator {max(step_ms - operators, 0):.2f} ms"
        )
        print(summary.events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
