"""triform's transpose and activations against torch's, at the benchmark models' training shapes:

    .venv/bin/python benchmarks/elementwise.py [--rounds 20] [--threads 2]

- transpose (kernels/native/transpose.c, what kernels/linear.py's `rows_of` lays a weight gradient's
  operand out with) against torch's strided copy of the same transposed view;
- each activation's forward and backward (kernels/native/activation.c) against torch's, at a
  feed-forward's 4,096 rows of 1,536.
Medians of alternating rounds, in ms, with the CPU they ran on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from triform.kernels import activation, native
from triform.kernels.machine import cpu_model

TRANSPOSES = [(4096, 384), (4096, 1536), (1536, 4096), (608, 30522)]  # (rows, columns) of the source
ACTIVATION_SHAPE = (4096, 1536)


def alternating(runs: dict, rounds: int) -> dict[str, float]:
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def transposes(kernels, rounds: int) -> None:
    print("| transpose of | dtype | triform (ms) | torch's copy (ms) | torch ÷ triform |\n|---|---|---:|---:|---:|")
    for shape in TRANSPOSES:
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(*shape).to(dtype)
            out = torch.empty(shape[::-1], dtype=dtype)
            runs = {
                "triform": lambda x=x, out=out: kernels.transpose_into(x, out),
                "torch": lambda x=x, out=out: out.copy_(x.t()),
            }
            ms = alternating(runs, rounds)
            name = str(dtype).removeprefix("torch.")
            print(f"| {shape[0]} × {shape[1]} | {name} | {ms['triform']:.3f} | {ms['torch']:.3f} | "
                  f"{ms['torch'] / ms['triform']:.2f}× |")  # fmt: skip


def activations(rounds: int) -> None:
    print("\n| activation | dtype | triform forward / backward (ms) | torch forward / backward (ms) |")
    print("|---|---|---:|---:|")
    for kind in ("gelu", "gelu_tanh", "silu"):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(*ACTIVATION_SHAPE).to(dtype).requires_grad_()
            grad = torch.randn(*ACTIVATION_SHAPE).to(dtype)
            runs = {}
            for name, function in (("triform", activation.natively), ("torch", activation.by_torch)):
                y = function(kind, x)  # its graph kept: the backward pass is timed alone
                runs[f"{name} forward"] = lambda f=function, k=kind, x=x: f(k, x)
                runs[f"{name} backward"] = lambda y=y, x=x, g=grad: torch.autograd.grad(y, x, g, retain_graph=True)
            ms = alternating(runs, rounds)
            ours = f"{ms['triform forward']:.2f} / {ms['triform backward']:.2f}"
            theirs = f"{ms['torch forward']:.2f} / {ms['torch backward']:.2f}"
            print(f"| {kind} | {str(dtype).removeprefix('torch.')} | {ours} | {theirs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = native.library()
    if kernels is None:
        raise SystemExit(f"triform's native kernels are not built here: {native.unavailable()}")
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    transposes(kernels, args.rounds)
    activations(args.rounds)


if __name__ == "__main__":
    main()
