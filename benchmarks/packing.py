"""What packing documents apart costs: training steps with `pack documents` against `pack stream`.

    .venv/bin/python benchmarks/packing.py                 # GPT (16 × 256) and BERT (32 × 128), bf16 and fp32
    .venv/bin/python benchmarks/packing.py --tiny          # small models and shapes: a check of the script
    .venv/bin/python benchmarks/packing.py --json out.json # also every timing, as JSON
    .venv/bin/python benchmarks/packing.py --results       # and the packing section of docs/results.md
    .venv/bin/python benchmarks/packing.py --rewrite out.json  # that section again from stored timings

The models and shapes are those of benchmarks/run.py (benchmarks/speed/models.py, training.py). Both
variants train the same model on the same windows: random tokens in documents whose lengths are drawn
around `--document-length` (Brown's sentences are about 28 tokens), separated as the data pipeline
separates them ([EOS] for GPT's clm, [SEP] for BERT's mlm), laid out by the objective with each
`pack`. The masks drawn are the same for both (the same seed). A step is forward, loss, backward,
gradient clipping and an AdamW step, as `triform train` runs it; variants alternate step by step in
one process, and the claim is the median of the per-round ratios, documents over stream (1.00:
free; 1.05: 5 % slower). Each step's wall time and the process's CPU time are both recorded: on a
machine shared with other work, a one-thread run's CPU seconds are the steadier measure of the work
(wall time also counts the time spent waiting for a core).
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
from speed.timing import load, median, paired_ratio
from speed.training import SHAPES, TINY_SHAPES, step_function

from triform.models import build_model
from triform.objectives import make_objective
from triform.train.config import OptimConfig
from triform.train.optim import build_optimizer

# The objective each benchmark model trains with, and how many tokens its layout adds to a window.
CASES = {"gpt": ("clm", 1), "bert": ("mlm", -2)}


def windows(n: int, length: int, vocab_size: int, separator: int, mean: float, seed: int = 0) -> list[list[int]]:
    """`n` windows of `length` tokens cut from a stream of documents of about `mean` tokens."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        row: list[int] = []
        while len(row) < length:
            size = 1 + int(torch.poisson(torch.tensor([mean - 1.0]), generator=generator))
            row += torch.randint(10, vocab_size, (size,), generator=generator).tolist() + [separator]
        rows.append(row[:length])
    return rows


def variants(name: str, shape, mean: float) -> tuple[dict, dict]:
    spec = model_specs(tiny=shape is TINY_SHAPES[name])[name]
    objective_name, extra = CASES[name]
    torch.manual_seed(0)
    model = build_model(spec.config).train()
    optimizer = build_optimizer(model, OptimConfig(), torch.device("cpu"))
    objectives = {
        pack: make_objective(objective_name, SPECIALS, spec.config.vocab_size, arch="stack", packed=True, pack=pack)
        for pack in ("documents", "stream")
    }
    separator = objectives["stream"].separator
    texts = windows(shape.batch, shape.length + extra, spec.config.vocab_size, separator, mean)
    batches = {pack: o.prepare(texts, torch.Generator().manual_seed(0)) for pack, o in objectives.items()}
    assert batches["documents"].documents is not None and batches["stream"].documents is None
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    steps = {}
    for precision, autocast in (("bf16", bf16), ("fp32", nullcontext)):
        for pack, batch in batches.items():
            inputs, objective = batch.model_inputs(), objectives[pack]
            steps[f"{pack} {precision}"] = step_function(
                model,
                optimizer,
                lambda inputs=inputs: model(**inputs),
                lambda logits, batch=batch, objective=objective: objective.loss(logits, batch),
                autocast,
            )
    documents = batches["documents"].documents
    info = {
        "model": name,
        "batch": shape.batch,
        "length": int(batches["documents"].ids.shape[1]),
        "documents_per_row": float((documents.max(-1).values + 1).float().mean()),
    }
    return steps, info


def alternate(steps: dict, *, warmup: int, repeats: int, label: str) -> dict:
    """Wall and CPU seconds of each step, the variants called in turn, round after round."""
    for _ in range(warmup):
        for run in steps.values():
            run()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    loads = [load()]
    for round_index in range(repeats):
        for name, run in steps.items():
            gc.collect()
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
        loads.append(load())
        shown = "  ".join(f"{n} {w[-1]:.2f}s ({c[-1]:.2f}s cpu)" for (n, w), c in zip(wall.items(), cpu.values()))
        print(
            f"  {label} round {round_index + 1}/{repeats}: {shown}  (load {loads[-1]:.1f})", file=sys.stderr, flush=True
        )
    return {"wall_seconds": wall, "cpu_seconds": cpu, "load": loads}


def section(results: dict, command: str) -> str:
    """The packing section of docs/results.md, from the figures of a run."""
    machine = results["machine"]
    loads = [value for case in results["cases"] for value in case["timing"]["load"]]
    lines = [
        "## Packing: documents apart against one stream",
        "",
        f"Written by `{command}`: training steps of the benchmark's GPT and BERT (benchmarks/run.py's models and "
        "shapes) on windows that pack documents of about 28 tokens, laid out by the objective with "
        "`--data.pack documents` (each document attended and placed alone) and `--data.pack stream` (documents "
        "attend across the [EOS] between them), alternating step by step in one process. "
        f"{machine['cpu']}, {machine['torch_threads']} torch thread(s), torch {machine['torch']}; the machine was "
        f"shared, load average {min(loads):.1f} to {max(loads):.1f}, so the one-thread CPU seconds are the measure "
        "(wall seconds also count waiting for a core). A ratio is the median over rounds of documents ÷ stream "
        "seconds: 1.00 is free.",
        "",
        "| model | shape (documents a row) | precision | stream tokens/s (wall) | documents tokens/s (wall) "
        "| documents ÷ stream, CPU s (middle half of the rounds) | documents ÷ stream, wall s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for case in results["cases"]:
        for precision in ("bf16", "fp32"):
            if precision not in case:
                continue
            cpu, wall = case[precision]["cpu"], case[precision]["wall"]
            worst = max(worst, cpu["documents_over_stream_seconds"])
            seconds = case["timing"]["cpu_seconds"]
            rounds = [d / s for d, s in zip(seconds[f"documents {precision}"], seconds[f"stream {precision}"])]
            low, _, high = statistics.quantiles(rounds, n=4)
            shape = f"{case['batch']} × {case['length']} ({case['documents_per_row']:.1f})"
            lines.append(
                f"| {case['model']} | {shape} | {precision} "
                f"| {wall['stream_tokens_per_s']:,.0f} | {wall['documents_tokens_per_s']:,.0f} "
                f"| {cpu['documents_over_stream_seconds']:.3f} ({low:.2f} to {high:.2f}) "
                f"| {wall['documents_over_stream_seconds']:.3f} |"
            )
    verdict = "under" if worst < 1.05 else "over"
    lines += [
        "",
        f"The dearest case costs {100 * (worst - 1):+.1f} % in CPU time, {verdict} the 5 % that makes `documents` "
        "the default pack. The document mask is built once per forward ((B, 1, T, T) booleans, shared by every "
        "layer) and attention reads it as it reads a padding mask; the products, which hold most of a step's "
        "time, are the same in both.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before them")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--document-length", type=float, default=28.0, help="mean tokens of a document")
    parser.add_argument("--tiny", action="store_true", help="small models and shapes")
    parser.add_argument("--only", choices=sorted(CASES), default=None, help="one model")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="one precision")
    parser.add_argument("--json", type=Path, default=None, help="write every timing to this file")
    parser.add_argument("--results", action="store_true", help="write the packing section of docs/results.md")
    parser.add_argument("--rewrite", type=Path, default=None, help="only write that section, from this JSON")
    args = parser.parse_args(argv)
    if args.rewrite:
        stored = json.loads(args.rewrite.read_text())
        print(f"wrote {replace_section('packing', section(stored, stored['command']))}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = describe()
    print(f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}", flush=True)
    shapes = TINY_SHAPES if args.tiny else SHAPES
    precisions = [args.precision] if args.precision else ["bf16", "fp32"]
    command = "python benchmarks/packing.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"machine": machine, "command": command.strip(), "cases": []}
    for name in [args.only] if args.only else list(CASES):
        results["cases"].append(measure(name, shapes[name], precisions, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.results:
        print(f"wrote {replace_section('packing', section(results, results['command']))}")


def measure(name: str, shape, precisions: list[str], args) -> dict:
    steps, info = variants(name, shape, args.document_length)
    steps = {variant: step for variant, step in steps.items() if variant.split()[1] in precisions}
    timing = alternate(steps, warmup=args.warmup, repeats=args.repeats, label=name)
    tokens = info["batch"] * info["length"]
    for precision in precisions:
        figures = {}
        for clock in ("wall", "cpu"):
            seconds = timing[f"{clock}_seconds"]
            documents, stream = seconds[f"documents {precision}"], seconds[f"stream {precision}"]
            figures[clock] = {
                "documents_tokens_per_s": tokens / median(documents),
                "stream_tokens_per_s": tokens / median(stream),
                "documents_over_stream_seconds": paired_ratio(documents, stream),
            }
        info[precision] = figures
        print(
            f"{name} {info['batch']} × {info['length']} ({info['documents_per_row']:.1f} documents a row), "
            f"{precision}: stream {figures['wall']['stream_tokens_per_s']:,.0f} tok/s, documents "
            f"{figures['wall']['documents_tokens_per_s']:,.0f} tok/s; documents take "
            f"{figures['wall']['documents_over_stream_seconds']:.3f}× the wall time of stream, "
            f"{figures['cpu']['documents_over_stream_seconds']:.3f}× its CPU time",
            flush=True,
        )
    return {**info, "timing": timing}


if __name__ == "__main__":
    main()
