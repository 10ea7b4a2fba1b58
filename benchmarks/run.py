"""triform against Hugging Face transformers, side by side, in one process, on the same weights.

    .venv/bin/python benchmarks/run.py                      # everything (a few minutes on 2 quiet cores)
    .venv/bin/python benchmarks/run.py --only gpt-train     # one case; or a family: --only gpt, --only train
    .venv/bin/python benchmarks/run.py --compile            # torch.compile: both sides' training, triform's decoding
    .venv/bin/python benchmarks/run.py --keep-freed-memory  # training steps keep freed host memory for reuse
    .venv/bin/python benchmarks/run.py --list               # the cases
    .venv/bin/python benchmarks/run.py --rewrite            # the tables again from results.json

Each case builds the model in triform and the same configuration in `transformers`, copies the
weights across through triform's converter, checks that both give the same logits, then times the
variants in alternating order (A B C, A B C, ...; one warm-up round, then --repeats rounds) and
reports medians and the median of the paired ratios. The machine's limits (matrix-product speed at
the case's own shapes, memory bandwidth) are measured in the same run. Results go to
benchmarks/results.md (tables) and benchmarks/results.json (every timing), and the ratios to the
speed section of docs/results.md, one table per machine (CPU model and instruction sets, with the
kernels calibration chose there); a run of some cases replaces those cases of its own machine and
keeps the others. The
machine may be shared: the load average is recorded with every round, and the ratios, not the
absolute figures, are the claim.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import decoding, training  # noqa: E402
from speed.machine import bandwidth, describe, gemm_rate  # noqa: E402
from speed.models import model_specs  # noqa: E402
from speed.report import decoding_figures, training_figures  # noqa: E402
from speed.results import write_results  # noqa: E402
from speed.timing import alternate  # noqa: E402

from triform.kernels.calibrate import calibration  # noqa: E402
from triform.kernels.host_memory import freed_memory_kept  # noqa: E402
from triform.precision import resolved_name  # noqa: E402

TRAINING_CASES = {"gpt-train": "gpt", "bert-train": "bert", "bart-train": "bart"}
DECODING_CASES = {
    f"{model}-{strategy}": (model, strategy) for model in ("gpt", "bart") for strategy in decoding.STRATEGIES
}
CASES = [*TRAINING_CASES, *DECODING_CASES]
# wall: seconds on the clock; cpu: CPU seconds of the process, which on a machine shared with other
# work leaves out the turns other processes take on the cores (best with --threads 1)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def selected(only: list[str] | None) -> list[str]:
    """Cases named exactly, or whose name contains a given word (gpt, train, greedy, ...)."""
    if not only:
        return CASES
    chosen = [case for case in CASES if any(word == case or word in case.split("-") for word in only)]
    unknown = [word for word in only if not any(word == case or word in case.split("-") for case in CASES)]
    if unknown:
        raise SystemExit(f"--only: no case matches {unknown[0]!r}; cases: {', '.join(CASES)}")
    return chosen


def run_training(case: str, args, specs: dict) -> dict:
    spec = specs[TRAINING_CASES[case]]
    shape = (training.TINY_SHAPES if args.tiny else training.SHAPES)[spec.name]
    variants, info = training.training_variants(spec, shape, args.compile)
    dtypes = {name.split()[-1] for name in variants}  # bf16 only where this CPU runs it natively
    gemm = {
        name: gemm_rate(info["gemm_shapes"], dtype, clock=CLOCKS[args.clock])
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        if name in dtypes
    }
    info["default_precision"] = resolved_name("auto", torch.device("cpu"))
    # with --keep-freed-memory, both sides' steps keep freed host memory for reuse (kernels/host_memory.py)
    with freed_memory_kept(args.keep_freed_memory) as kept:
        timing = alternate(variants, warmup=args.warmup, repeats=args.repeats, label=case, clock=CLOCKS[args.clock])
    info["freed_memory_kept"] = kept
    return {"kind": "training", "info": info, "timing": timing, "figures": training_figures(case, timing, info, gemm)}


def run_decoding(case: str, args, specs: dict, read_gb_s: float) -> dict:
    model, strategy = DECODING_CASES[case]
    spec = specs[model]
    shape = (decoding.TINY_SHAPES if args.tiny else decoding.SHAPES)[model]
    variants, info = decoding.decoding_variants(spec, shape, strategy, args.compile)
    timing = alternate(variants, warmup=args.warmup, repeats=args.repeats, label=case, clock=CLOCKS[args.clock])
    info["agreement"] = decoding.agreement(info.pop("outputs"))
    return {"kind": "decoding", "info": info, "timing": timing, "figures": decoding_figures(timing, info, read_gb_s)}


def kernel_table() -> dict[str, str]:
    """The kernel calibration chose for each shape class the cases ran (kernels/calibrate.py)."""
    return {key: choice.kernel for key, choice in calibration().table()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    parser.add_argument(
        "--only", nargs="+", help="cases to run: names, or words of names (gpt, train, greedy, b8, ...)"
    )
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case (at least 5 for the report)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them (at least 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile both sides' training steps; add triform's compiled decoding steps",
    )
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="what a round's time is (see CLOCKS)")
    parser.add_argument("--tiny", action="store_true", help="small models and shapes: a check of the benchmark itself")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="training steps of both sides keep freed host memory for reuse, as --train.keep_freed_memory true does",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write PREFIX.md and PREFIX.json (default benchmarks/results, "
        "or benchmarks/results-tiny with --tiny)",
    )
    parser.add_argument("--rewrite", action="store_true", help="rewrite the tables from the stored JSON; run nothing")
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="leave docs/results.md alone (it is updated only by runs at full size to the default output)",
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    if args.warmup < 1 or args.repeats < 1:
        raise SystemExit("--warmup and --repeats: at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or Path(__file__).resolve().parent / ("results-tiny" if args.tiny else "results")
    docs = None if args.tiny or args.output or args.no_docs else ROOT / "docs" / "results.md"
    if args.rewrite:
        print(write_results(output, {}, {}, docs)[0])
        return 0
    cases = selected(args.only)
    specs = model_specs(tiny=args.tiny)
    started = time.monotonic()
    limits = {"bandwidth": bandwidth(64 if args.tiny else 512)}
    print(
        f"memory bandwidth: read {limits['bandwidth']['read_gb_s']:.1f} GB/s, copy "
        f"{limits['bandwidth']['copy_gb_s']:.1f} GB/s",
        file=sys.stderr,
    )
    results = {}
    for case in cases:
        print(f"{case} ({time.monotonic() - started:.0f} s so far)", file=sys.stderr, flush=True)
        if case in TRAINING_CASES:
            results[case] = run_training(case, args, specs)
        else:
            results[case] = run_decoding(case, args, specs, limits["bandwidth"]["read_gb_s"])
        gc.collect()
    run = {
        "machine": describe(),
        "kernels": kernel_table(),
        "limits": limits,
        "seconds": time.monotonic() - started,
        "argv": sys.argv[1:],
        "repeats": args.repeats,
        "warmup": args.warmup,
        "compiled": args.compile,
        "clock": args.clock,
    }
    text, failures = write_results(output, run, results, docs)
    print(text)
    print(f"{len(cases)} case(s) in {run['seconds']:.0f} s; tables in {output.with_suffix('.md')}", file=sys.stderr)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
