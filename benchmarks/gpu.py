"""GPT-2 small (124M) on a GPU, triform beside transformers with the same weights, in one short run:

    python benchmarks/gpu.py --out gpu.json                  # on a machine with a CUDA device
    python benchmarks/gpu.py --device cpu --tiny             # the same code, small, on a CPU (a smoke test)

- Training in bf16 autocast (fp32 weights, fused AdamW, gradient clipping), eager and with each block
  compiled (regional compilation, nn/block.py's `compile_blocks`) on triform's side: tokens/s and model
  FLOPs utilisation against the bf16 matrix-product rate measured on the device at the step's own
  shapes (and against an 8192³ product's), both sides' attention held to SDPA's flash kernel
  (`sdpa_kernel(FLASH_ATTENTION)`: a call it cannot serve fails instead of falling back unseen).
- Greedy decoding, batch 1 and 8 (16 prompt tokens, 128 new): tokens/s of triform's default precision
  and of fp32 against transformers' fp32 and bf16 `generate`; the fp32 outputs must be identical.

Random weights (GPT2Config's sizes), random token ids: nothing is downloaded. Times are medians of
alternating rounds, each ended by `torch.cuda.synchronize`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed.machine import best_seconds, gemm_rate
from speed.models import SPECIALS, TINY_BODY, ModelSpec, build_twins, check_same_logits
from speed.timing import alternate
from speed.training import (
    TrainingShape,
    make_batch,
    reference_inputs,
    reference_loss,
    training_flops,
    training_gemm_shapes,
)

from triform.generate import GenerationConfig, generate_ids, resolve_layout
from triform.kernels.loss import logits_released
from triform.models.presets import get_preset
from triform.nn.block import compile_blocks
from triform.train.config import OptimConfig
from triform.train.optim import build_optimizer

SHAPE, TINY_SHAPE = TrainingShape(16, 1024), TrainingShape(2, 32)
DECODING = {"prompt": 16, "new_tokens": 128, "batches": (1, 8)}
TINY_DECODING = {"prompt": 8, "new_tokens": 8, "batches": (1, 2)}


def gpt2_small(tiny: bool) -> ModelSpec:
    """GPT-2 small as GPT2Config has it; transformers' GELU as one kernel ("gelu_pytorch_tanh", the
    same function as its Python "gelu_new")."""
    config = get_preset("gpt2-small").model
    if tiny:
        config = config.replace(**TINY_BODY, max_len=64, vocab_size=512)
    return ModelSpec("gpt", config, "GPT2LMHeadModel", {"activation_function": "gelu_pytorch_tanh"})


def clock(device: torch.device):
    """perf_counter, read once the device has finished the work queued before it."""

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


def medians(variants: dict, rounds: int, device: torch.device, label: str) -> dict[str, float]:
    """Median seconds of each variant over `rounds` rounds taken in turn, after one warm-up round."""
    timed = alternate(variants, warmup=1, repeats=rounds, label=label, clock=clock(device))
    return {name: statistics.median(values) for name, values in timed["seconds"].items()}


def square_rate(device: torch.device, n: int) -> float:
    a, b = (torch.randn(n, n, device=device).bfloat16() for _ in range(2))
    return 2.0 * n**3 / best_seconds(lambda: a @ b, repeats=5, clock=clock(device)) / 1e9


@contextmanager
def attention_kernels(device: torch.device, flash: bool):
    """On a GPU with `flash`, SDPA's flash kernel alone: a call it cannot serve raises."""
    if device.type != "cuda" or not flash:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        yield


def training(spec: ModelSpec, shape: TrainingShape, device: torch.device, rounds: int, compile_blocks_too: bool):
    model, reference = build_twins(spec)
    check_same_logits(model, reference, spec)
    model.to(device), reference.to(device)
    objective, batch = make_batch(spec, shape)
    batch = batch.to(device)
    inputs, hf_inputs = batch.model_inputs(), reference_inputs(batch)
    bf16 = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    kernels = {"flash": True}

    def step_of(net, forward, loss):
        optimizer = build_optimizer(net, OptimConfig(), device)

        def step():
            with attention_kernels(device, kernels["flash"]), bf16():
                logits = forward()
            loss(logits).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), OptimConfig.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    def ours_loss(logits):
        with logits_released():
            return objective.loss(logits, batch)

    steps = {
        "triform": step_of(model, lambda: model(**inputs), ours_loss),
        "transformers": step_of(
            reference, lambda: reference(**hf_inputs).logits, lambda logits: reference_loss(logits, batch.targets)
        ),
    }
    try:
        times = medians(steps, rounds, device, "train")
    except RuntimeError as error:  # flash refused a call: say so, and measure with SDPA's own choice
        kernels.update(flash=False, flash_error=str(error).splitlines()[0][:300])
        print(f"flash attention refused a call: {kernels['flash_error']}", file=sys.stderr)
        times = medians(steps, rounds, device, "train")
    compiled_seconds = None
    if compile_blocks_too:
        compile_blocks(model)
        start = time.perf_counter()
        steps["triform compiled"] = steps["triform"]
        steps["triform compiled"]()  # the compile
        compiled_seconds = time.perf_counter() - start
        times |= medians({"triform compiled": steps["triform compiled"]}, rounds, device, "train compiled")
    flops = training_flops(spec, shape, batch.n_targets)
    shapes = training_gemm_shapes(spec, shape, batch.n_targets)
    rate = gemm_rate(shapes, torch.bfloat16, clock=clock(device), device=device)
    tokens = batch.ids.numel()
    return {
        "batch": shape.batch,
        "length": shape.length,
        "flops_per_step": flops,
        "matmul_gflops_at_step_shapes": rate,
        "compile_seconds": compiled_seconds,
        "attention": kernels,
        "steps": {
            name: {"seconds": s, "tokens_per_s": tokens / s, "mfu_at_step_shapes": flops / s / 1e9 / rate}
            for name, s in times.items()
        },
    }


def decoding(spec: ModelSpec, settings: dict, device: torch.device, rounds: int) -> dict:
    model, reference = build_twins(spec)
    model.eval().to(device), reference.eval().to(device)
    twins = {"fp32": reference, "bf16": copy.deepcopy(reference).to(torch.bfloat16)}
    cases = {}
    for batch in settings["batches"]:
        generator = torch.Generator().manual_seed(batch)
        prompts = torch.randint(10, spec.config.vocab_size, (batch, settings["prompt"]), generator=generator)
        cases[f"greedy-b{batch}"] = greedy(model, twins, prompts.tolist(), settings["new_tokens"], device, rounds)
    return cases


def greedy(model, twins: dict, prompts: list[list[int]], new: int, device: torch.device, rounds: int) -> dict:
    """tokens/s of greedy decoding, every output `new` tokens long: triform in fp32 and in its default
    precision, transformers' `generate` with its model in fp32 and in bf16."""
    layout = resolve_layout(model.config.arch, SPECIALS)
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, precision="fp32")
    ids = torch.tensor([[SPECIALS.bos, *p] for p in prompts], device=device)
    outputs: dict[str, list] = {}

    def ours(precision: str, name: str):
        def run():
            rows = generate_ids(model, layout, prompts, config.replace(precision=precision))
            outputs[name] = [row.tokens for row in rows]

        return run

    def theirs(net, name: str):
        def run():
            with torch.inference_mode():
                out = net.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                    do_sample=False, eos_token_id=SPECIALS.eos, pad_token_id=SPECIALS.pad,
                )  # fmt: skip
            outputs[name] = out[:, ids.shape[1] :].tolist()

        return run

    variants = {
        "triform fp32": ours("fp32", "triform fp32"),
        "transformers fp32": theirs(twins["fp32"], "transformers fp32"),
        "triform default": ours("auto", "triform default"),
        "transformers bf16": theirs(twins["bf16"], "transformers bf16"),
    }
    times = medians(variants, rounds, device, f"greedy-b{len(prompts)}")
    return {
        "tokens_per_s": {name: len(prompts) * new / s for name, s in times.items()},
        "fp32_identical_to_transformers": outputs["triform fp32"] == outputs["transformers fp32"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a small model and few tokens: checks the code runs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled training step")
    parser.add_argument("--out", type=Path, help="where the results go as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    spec = gpt2_small(args.tiny)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "matmul_gflops_square": square_rate(device, 1024 if args.tiny else 8192),
        "training": training(spec, TINY_SHAPE if args.tiny else SHAPE, device, args.rounds, not args.no_compile),
        "decoding": decoding(spec, TINY_DECODING if args.tiny else DECODING, device, args.rounds),
    }
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def print_report(report: dict) -> None:
    train = report["training"]
    print(f"{report['device']}, torch {report['torch']}")
    print(f"bf16 products: {train['matmul_gflops_at_step_shapes']:,.0f} GFLOP/s at the step's shapes, "
          f"{report['matmul_gflops_square']:,.0f} square")  # fmt: skip
    for name, s in train["steps"].items():
        square = train["flops_per_step"] / s["seconds"] / 1e9 / report["matmul_gflops_square"]
        mfu = 100 * s["mfu_at_step_shapes"]
        print(f"  train {name}: {s['seconds'] * 1e3:.1f} ms a step, {s['tokens_per_s']:,.0f} tokens/s, "
              f"MFU {mfu:.0f} % ({100 * square:.0f} % of the square product's rate)")  # fmt: skip
    for case, result in report["decoding"].items():
        rates = ", ".join(f"{name} {rate:,.0f}" for name, rate in result["tokens_per_s"].items())
        print(f"  {case} tokens/s: {rates}; fp32 identical: {result['fp32_identical_to_transformers']}")


if __name__ == "__main__":
    main()
