"""What an ELECTRA training step costs against BERT's mlm step on the same body.

    .venv/bin/python benchmarks/electra.py                   # the benchmark's BERT (6 × 384, 32 × 128), bf16
    .venv/bin/python benchmarks/electra.py --tiny            # small model and shape: a check of the script
    .venv/bin/python benchmarks/electra.py --json out.json   # also every timing, as JSON
    .venv/bin/python benchmarks/electra.py --results         # and the electra section of docs/results.md
    .venv/bin/python benchmarks/electra.py --rewrite out.json  # that section again from stored timings

The model is benchmarks/run.py's BERT (benchmarks/speed/models.py) at its training shape. `mlm` is
BERT's objective on it; `electra` trains the same body as a discriminator with a generator of
`generator_scale` its width (1/4 and 1/2, rounded to whole heads; Clark et al. 2020 §3.2), which
runs the generator on the masked text, samples, and runs the body on the corrupted text with a
logit per token. Both see the same windows with the same masks (15 %). A step is forward, loss,
backward, gradient clipping and an AdamW step, as `triform train` runs it; the variants alternate
step by step in one process, and the claim is the median of the per-round ratios of CPU seconds,
electra over mlm (on a shared machine a one-thread run's CPU seconds are the steadier measure).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from results_sections import replace_section
from speed.machine import describe
from speed.models import SPECIALS, model_specs
from speed.timing import load
from speed.training import SHAPES, TINY_SHAPES, step_function

from triform.models import build_model
from triform.objectives import make_objective
from triform.objectives.electra import ElectraOptions, generator_config
from triform.train.config import OptimConfig
from triform.train.optim import build_optimizer

SCALES = (0.25, 0.5)


def variants(tiny: bool, autocast) -> tuple[dict, dict]:
    spec, shape = model_specs(tiny=tiny)["bert"], (TINY_SHAPES if tiny else SHAPES)["bert"]
    vocab_size = spec.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    texts = torch.randint(10, vocab_size, (shape.batch, shape.length - 2), generator=generator).tolist()
    steps, sizes = {}, {}
    objectives = {"mlm": make_objective("mlm", SPECIALS, vocab_size)}
    for scale in SCALES:
        objectives[f"electra {scale}"] = make_objective("electra", SPECIALS, vocab_size, generator_scale=scale)
    for name, objective in objectives.items():
        torch.manual_seed(0)
        trained = objective.training_module(build_model(spec.config).train())
        optimizer = build_optimizer(trained, OptimConfig(), torch.device("cpu"))
        batch = objective.prepare(texts, torch.Generator().manual_seed(0))
        inputs = batch.model_inputs()
        steps[name] = step_function(
            trained,
            optimizer,
            lambda trained=trained, inputs=inputs: trained(**inputs),
            lambda outputs, batch=batch, objective=objective: objective.loss(outputs, batch),
            autocast,
        )
        sizes[name] = sum(p.numel() for p in trained.parameters())
    return steps, {"batch": shape.batch, "length": shape.length, "parameters": sizes}


def alternate(steps: dict, *, warmup: int, repeats: int) -> dict:
    """CPU and wall seconds of each step, the variants called in turn, round after round."""
    for _ in range(warmup):
        for run in steps.values():
            run()
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    wall: dict[str, list[float]] = {name: [] for name in steps}
    loads = [load()]
    for round_index in range(repeats):
        for name, run in steps.items():
            gc.collect()
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
        loads.append(load())
        shown = "  ".join(f"{n} {c[-1]:.2f}s cpu" for n, c in cpu.items())
        print(f"  round {round_index + 1}/{repeats}: {shown}  (load {loads[-1]:.1f})", file=sys.stderr, flush=True)
    return {"cpu_seconds": cpu, "wall_seconds": wall, "load": loads}


def ratios(timing: dict) -> dict:
    """Median over rounds of each electra step's CPU seconds over the mlm step's of the same round."""
    cpu = timing["cpu_seconds"]
    return {
        name: statistics.median(e / m for e, m in zip(seconds, cpu["mlm"]))
        for name, seconds in cpu.items()
        if name != "mlm"
    }


def section(results: dict) -> str:
    """The electra section of docs/results.md, from the figures of a run."""
    machine, loads, cpu = results["machine"], results["timing"]["load"], results["timing"]["cpu_seconds"]
    config = model_specs(tiny=results["length"] < 128)["bert"].config
    lines = [
        "## ELECTRA: a training step against BERT's mlm step",
        "",
        f"Written by `{results['command']}`: training steps (forward, loss, backward, clipping, AdamW) of the "
        f"benchmark's BERT ({config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, vocabulary "
        f"{config.vocab_size:,}) on {results['batch']} windows of {results['length']} tokens, 15 % masked, in "
        f"{results['precision']}, `mlm` and `electra` alternating step by step in one process. {machine['cpu']}, "
        f"{machine['torch_threads']} torch thread(s), torch {machine['torch']}; the machine was shared, load "
        f"average {min(loads):.1f} to {max(loads):.1f}, so the one-thread CPU seconds are the measure. A ratio is "
        "the median over rounds of electra ÷ mlm seconds.",
        "",
        "| objective | generator (d_model, heads, layers) | parameters trained | CPU s a step (median) "
        "| ÷ mlm, CPU s (middle half of the rounds) |",
        "|---|---|---:|---:|---:|",
        f"| mlm | — | {results['parameters']['mlm'] / 1e6:.1f}M | {statistics.median(cpu['mlm']):.2f} | 1 |",
    ]
    for name, ratio in results["ratios"].items():
        scale = float(name.split()[1])
        narrow = generator_config(config, ElectraOptions(generator_scale=scale))
        rounds = [e / m for e, m in zip(cpu[name], cpu["mlm"])]
        low, _, high = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else (ratio, ratio, ratio)
        lines.append(
            f"| electra, generator_scale {scale} | {narrow.d_model}, {narrow.n_heads}, {narrow.n_layers} "
            f"| {results['parameters'][name] / 1e6:.1f}M | {statistics.median(cpu[name]):.2f} "
            f"| {ratio:.2f} ({low:.2f} to {high:.2f}) |"
        )
    lines += [
        "",
        "The generator keeps the model's head size, so a scale is rounded to whole heads. What an electra "
        "step adds is the generator's pass (its layers over every token, "
        "the vocabulary at the masks) and the sampling; the body then scores every token with one logit instead "
        "of the vocabulary at the masks. In exchange the body learns from every token rather than from the 15 % "
        "masked (Clark et al. 2020, §1), which this table does not measure.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before them")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--tiny", action="store_true", help="small model and shape")
    parser.add_argument("--json", type=Path, default=None, help="write every timing to this file")
    parser.add_argument("--results", action="store_true", help="write the electra section of docs/results.md")
    parser.add_argument("--rewrite", type=Path, default=None, help="only write that section, from this JSON")
    args = parser.parse_args(argv)
    if args.rewrite:
        print(f"wrote {replace_section('electra', section(json.loads(args.rewrite.read_text())))}")
        return 0
    torch.set_num_threads(args.threads)
    machine = describe()
    print(f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}", flush=True)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else nullcontext
    steps, info = variants(args.tiny, autocast)
    timing = alternate(steps, warmup=args.warmup, repeats=args.repeats)
    found = ratios(timing)
    loads = f"load {min(timing['load']):.1f} to {max(timing['load']):.1f}"
    print(f"bert {info['batch']} × {info['length']}, {args.precision}, {loads}")
    for name, ratio in found.items():
        extra = info["parameters"][name] / info["parameters"]["mlm"]
        print(f"  {name}: {ratio:.2f} × the mlm step's CPU seconds, {extra:.2f} × its parameters")
    command = "python benchmarks/electra.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"machine": machine, "command": command.strip(), "precision": args.precision, **info}
    results.update(timing=timing, ratios=found)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.results:
        print(f"wrote {replace_section('electra', section(results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
