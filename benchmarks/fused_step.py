"""The fused block step against the blocks' own modules: greedy decoding of the benchmark's models.

    .venv/bin/python benchmarks/fused_step.py [--models gpt bart llama] [--precisions fp32 bf16 int8] [--batch 1]

The GPT and BART of benchmarks/run.py, and a Llama-like stack of the same size (rotary positions,
RMSNorm, SwiGLU, 2 key/value heads), random weights, every output its full length. Each case decodes
three ways: every block computed by its modules (`Block.forward_modules`); each block by its default
forward, where kernels/fused_step.py runs the fused step wherever calibration measured it faster, one
native call a block; and by default, where a stack whose blocks all take the fused step runs them in
one call (`stack_step`: its embeddings, blocks and final norm). The three alternate in rounds in one
process, the median round is reported, and the tokens are compared. int8 is the model quantized
(kernels/int8.py): there the fused
step and the modules round the activations differently (the fused step row by row, fbgemm's modules
with one scale per call), and random weights' near-uniform scores let that part their tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed.decoding import SHAPES, random_prompts
from speed.models import SPECIALS, ModelSpec, model_specs

from triform.generate import GenerationConfig, generate_ids, resolve_layout
from triform.generate.precision import bf16_twin
from triform.kernels.int8 import quantize
from triform.kernels.machine import this_machine
from triform.models import build_model
from triform.models.stack import Stack
from triform.nn.block import Block


def specs() -> dict[str, ModelSpec]:
    found = model_specs()
    llama = found["gpt"].config.replace(
        position="rotary", norm="rmsnorm", activation="silu", gated=True, bias=False, n_kv_heads=2, d_ff=1024
    )
    return {"gpt": found["gpt"], "bart": found["bart"], "llama": ModelSpec("llama", llama, "", {})}


VARIANTS = ("one call", "a call per block", "modules")


def case(spec: ModelSpec, precision: str, batch: int, rounds: int) -> tuple[dict[str, float], bool, bool]:
    """(ms a step of each of VARIANTS, whether the two fused ways give the same tokens, whether the
    modules give them too)."""
    torch.manual_seed(0)
    model = build_model(spec.config).eval()
    if precision == "int8":
        model, precision = quantize(model, "int8"), "fp32"
    shape = SHAPES["bart" if spec.config.arch != "stack" else "gpt"]
    prompts = random_prompts(spec, shape, batch)
    layout = resolve_layout(spec.config.arch, SPECIALS)
    config = GenerationConfig(max_new_tokens=shape.new_tokens, min_new_tokens=shape.new_tokens, precision=precision)
    default = Block.forward
    tokens: dict[str, list] = {}
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    generate_ids(model, layout, prompts, config)  # makes the bf16 twin that decodes where bf16 is asked
    decoders = [model] + ([bf16_twin(model)] if precision == "bf16" else [])
    stacks = [module for decoder in decoders for module in decoder.modules() if isinstance(module, Stack)]
    together = [stack.stack_step for stack in stacks]

    def run(variant: str) -> float:
        Block.forward = Block.forward_modules if variant == "modules" else default
        for stack, stack_step in zip(stacks, together):
            stack.stack_step = stack_step if variant == "one call" else None
        try:
            start = time.perf_counter()
            tokens[variant] = [row.tokens for row in generate_ids(model, layout, prompts, config)]
            return time.perf_counter() - start
        finally:
            Block.forward = default
            for stack, stack_step in zip(stacks, together):
                stack.stack_step = stack_step

    for variant in VARIANTS:  # warm-up: calibration
        run(variant)
    for _ in range(rounds):
        for variant in VARIANTS:
            times[variant].append(run(variant))
    ms = {variant: 1e3 * statistics.median(times[variant]) / shape.new_tokens for variant in VARIANTS}
    return ms, tokens["one call"] == tokens["a call per block"], tokens["one call"] == tokens["modules"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gpt", "bart", "llama"], choices=["gpt", "bart", "llama"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "int8"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{this_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; batch {args.batch}")
    print(
        "| model | precision | fused, one call (ms a step) | fused, a call per block | modules | "
        "modules ÷ one call | a call per block ÷ one call | same tokens: per block, modules |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in args.models:
        for precision in args.precisions:
            ms, same_fused, same_modules = case(specs()[name], precision, args.batch, args.rounds)
            one, each, modules = (ms[variant] for variant in VARIANTS)
            print(
                f"| {name} | {precision} | {one:.2f} | {each:.2f} | {modules:.2f} | {modules / one:.2f}× | "
                f"{each / one:.2f}× | {same_fused}, {same_modules} |"
            )


if __name__ == "__main__":
    main()
