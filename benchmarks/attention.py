"""One attention layer of a training step, forward and backward, by each kernel kernels/attention.py
chooses between: triform's own (`native`, native/training_attention*.c), torch's products around a
softmax (`written-out`) and torch's fused kernel (`sdpa`), side by side in one process.

    .venv/bin/python benchmarks/attention.py [--repeats 10] [--threads 2]

The cases are the layers of benchmarks/run.py's GPT (16 x 6 heads, 256 causal queries of 64) and
BERT (32 x 6 heads, 128 queries of 64, a padding mask, attention dropout 0.1), in fp32 and in bf16
(the bf16 native kernel where the CPU has AVX512-BF16). Each variant's time is the median over
rounds that call every variant in turn; the ratio is torch's fused kernel's time over each one's,
paired by round. The CPU is printed with the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed.timing import alternate, median, paired_ratio

from triform.kernels import attention, native
from triform.kernels.machine import this_machine
from triform.nn import attention as textbook

# name: (batch, heads, queries, d_head, causal, padded keys of the second half of the rows, dropout)
CASES = {"gpt layer": (16, 6, 256, 64, True, 0, 0.0), "bert layer": (32, 6, 128, 64, False, 40, 0.1)}
KERNELS = {"native": attention.native_attention, "written-out": attention.written_out, "sdpa": textbook.attend}


def layer(case: tuple, dtype: torch.dtype, kernel) -> callable:
    """One forward and backward pass of `kernel` on the case's q, k, v (views of one projection, as a
    layer splits its heads) in `dtype`."""
    batch, heads, queries, d, causal, padded, p = case
    generator = torch.Generator().manual_seed(0)
    joined = torch.randn(batch, queries, 3, heads, d, generator=generator).to(dtype)
    q, k, v = (joined[:, :, i].transpose(1, 2).requires_grad_() for i in range(3))
    mask = None
    if padded:
        mask = torch.ones(batch, 1, 1, queries, dtype=torch.bool)
        mask[batch // 2 :, ..., -padded:] = False
    grad = torch.randn(batch, heads, queries, d, generator=generator).to(dtype)

    def run() -> None:
        out = kernel(q, k, v, mask, causal, p, None)
        torch.autograd.grad(out, (q, k, v), grad)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = native.library()
    dtypes = [torch.float32] + (
        [torch.bfloat16] if kernels and torch.bfloat16 in kernels.training_attention_dtypes else []
    )
    print(f"{this_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| case | dtype | kernel | ms forward + backward | sdpa's time ÷ this one's |")
    print("|---|---|---|---:|---:|")
    for name, case in CASES.items():
        for dtype in dtypes:
            runs = {kernel: layer(case, dtype, function) for kernel, function in KERNELS.items()}
            if not kernels:  # without triform's kernels `native` is torch's fused kernel again
                runs.pop("native")
            seconds = alternate(runs, warmup=2, repeats=args.repeats, label=f"{name} {dtype}")["seconds"]
            for kernel, times in seconds.items():
                ratio = paired_ratio(seconds["sdpa"], times)
                shown = str(dtype).removeprefix("torch.")
                print(f"| {name} | {shown} | {kernel} | {1e3 * median(times):.1f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
