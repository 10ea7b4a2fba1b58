"""The fused block step against the blocks' own modules: greedy decoding of the benchmark's models.

    .venv/bin/python benchmarks/fused_step.py [--models gpt bart llama] [--precisions fp32 bf16 int8] [--batch 1]

The GPT and BART of benchmarks/run.py, and a Llama-like stack of the same size (rotary positions,
RMSNorm, SwiGLU, 2 key/value heads), random weights, every output its full length. Each case decodes
with every block computed by its modules (`Block.forward_modules`) and by its default forward, where
kernels/fused_step.py runs the fused step wherever calibration measured it faster; the two alternate
in rounds in one process, the median round is reported, and the tokens of both are compared. int8 is
the model quantized (kernels/int8.py): there the two round the activations differently (the fused step
row by row, fbgemm's modules with one scale per call), and random weights' near-uniform scores let
that part their tokens.
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
from triform.kernels.int8 import quantize
from triform.kernels.machine import this_machine
from triform.models import build_model
from triform.nn.block import Block


def specs() -> dict[str, ModelSpec]:
    found = model_specs()
    llama = found["gpt"].config.replace(
        position="rotary", norm="rmsnorm", activation="silu", gated=True, bias=False, n_kv_heads=2, d_ff=1024
    )
    return {"gpt": found["gpt"], "bart": found["bart"], "llama": ModelSpec("llama", llama, "", {})}


def case(spec: ModelSpec, precision: str, batch: int, rounds: int) -> tuple[float, float, bool]:
    """(ms a step with the fused step, with the modules alone, whether their tokens are equal)."""
    torch.manual_seed(0)
    model = build_model(spec.config).eval()
    if precision == "int8":
        model, precision = quantize(model, "int8"), "fp32"
    shape = SHAPES["bart" if spec.config.arch != "stack" else "gpt"]
    prompts = random_prompts(spec, shape, batch)
    layout = resolve_layout(spec.config.arch, SPECIALS)
    config = GenerationConfig(max_new_tokens=shape.new_tokens, min_new_tokens=shape.new_tokens, precision=precision)
    default = Block.forward
    tokens: dict[bool, list] = {}
    times: dict[bool, list[float]] = {True: [], False: []}

    def run(fused: bool) -> float:
        Block.forward = default if fused else Block.forward_modules
        try:
            start = time.perf_counter()
            tokens[fused] = [row.tokens for row in generate_ids(model, layout, prompts, config)]
            return time.perf_counter() - start
        finally:
            Block.forward = default

    run(True), run(False)  # warm-up: calibration, the bf16 twin
    for _ in range(rounds):
        for fused in (True, False):
            times[fused].append(run(fused))
    fused_ms, modules_ms = (1e3 * statistics.median(times[f]) / shape.new_tokens for f in (True, False))
    return fused_ms, modules_ms, tokens[True] == tokens[False]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gpt", "bart", "llama"], choices=["gpt", "bart", "llama"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "int8"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{this_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; batch {args.batch}")
    print("| model | precision | fused step (ms a step) | modules (ms a step) | modules ÷ fused | same tokens |")
    print("|---|---|---:|---:|---:|---|")
    for name in args.models:
        for precision in args.precisions:
            fused, modules, same = case(specs()[name], precision, args.batch, args.rounds)
            print(f"| {name} | {precision} | {fused:.2f} | {modules:.2f} | {modules / fused:.2f}× | {same} |")


if __name__ == "__main__":
    main()
