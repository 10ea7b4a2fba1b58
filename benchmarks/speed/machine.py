"""The machine's own limits, measured in the same run: matrix products at the benchmark's shapes,
and memory bandwidth; and what the machine and its software are (CPU model, vendor, instruction sets)."""

from __future__ import annotations

import os
import platform
import time

import torch
import torch.nn.functional as F

from triform.kernels.linear import ONEDNN, onednn_product
from triform.kernels.machine import cpu_model as cpu_name  # the one reader of the CPU's model name


def best_seconds(run, repeats: int = 3, clock=time.perf_counter) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return min(times)


def runs_here(kernel) -> bool:
    """Whether this CPU can run `kernel` (oneDNN's bf16 inner product raises on one without AVX512)."""
    try:
        kernel()
    except RuntimeError:
        return False
    return True


def gemm_rate(
    shapes: list[tuple[int, int, int, int]],
    dtype: torch.dtype,
    *,
    backward: bool = True,
    clock=time.perf_counter,
    device: torch.device | str = "cpu",
) -> float:
    """GFLOP/s of the matrix products of a training step, each at its own shape and as often as the
    step runs it: for each linear layer (rows, in, out, count), the forward product and, with
    `backward`, the two of the backward pass (input and weight gradients). Each product takes the
    best of a few runs by torch's default kernel and, where present, oneDNN's, each also computing
    the transposed product (in fp32 the fastest of them varies by CPU): the ceiling this machine
    reaches on exactly this work, timed by `clock` (the one the steps are timed by), on `device` (a
    GPU's clock must wait for its kernels: benchmarks/gpu.py's does)."""
    total_flops = total_seconds = 0.0
    for rows, n_in, n_out, count in shapes:
        if rows == 0:
            continue
        x = torch.randn(rows, n_in, dtype=dtype, device=device)
        weight = torch.randn(n_out, n_in, dtype=dtype, device=device)
        grad = torch.randn(rows, n_out, dtype=dtype, device=device)
        products = [(x, weight)] + ([(grad, weight.t()), (grad.t(), x.t())] if backward else [])
        for a, b in products:  # a · bᵀ
            kernels = [lambda a=a, b=b: F.linear(a, b), lambda a=a, b=b: F.linear(b, a)]  # a · bᵀ, or (b · aᵀ)
            kernels += [lambda a=a, b=b: onednn_product(a, b, None), lambda a=a, b=b: onednn_product(b, a, None)] * (
                ONEDNN and x.device.type == "cpu"
            )
            total_seconds += min(best_seconds(kernel, clock=clock) for kernel in kernels if runs_here(kernel)) * count
            total_flops += 2.0 * rows * n_in * n_out * count
    return total_flops / total_seconds / 1e9


def bandwidth(megabytes: int = 512) -> dict:
    """GB/s reading a buffer much larger than the caches (a sum), and copying one (read + write)."""
    source = torch.ones(megabytes * 2**20 // 4)  # written, so that its pages are real
    target = torch.empty_like(source)
    n_bytes = source.numel() * 4
    read = n_bytes / best_seconds(lambda: source.sum()) / 1e9
    copy = 2 * n_bytes / best_seconds(lambda: target.copy_(source)) / 1e9
    return {"read_gb_s": read, "copy_gb_s": copy}


def describe() -> dict:
    import transformers

    from triform.kernels import native
    from triform.kernels.machine import cpu_family, cpu_vendor, isa_flags
    from triform.precision import native_bf16

    built = native.library() is not None

    return {
        "cpu": cpu_name(),
        "family": cpu_family(),
        "vendor": cpu_vendor(),
        "isa": isa_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": native_bf16(torch.device("cpu")),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # triform's C kernels: "built", what their build went without, or why they are absent
        "native_kernels": ("; ".join(native.build_notes()) or "built")
        if built
        else f"left out: {native.unavailable()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }
