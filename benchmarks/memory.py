"""Memory of fine-tuning at a real size: GPT-2 small (124M parameters, random weights imported through
triform's converter: benchmarks/gpt2_small.py), batch 8 x 512 tokens, AdamW, a few steps.

    nice -n 10 .venv/bin/python benchmarks/memory.py --work /tmp/gpt2-small          # every case
    nice -n 10 .venv/bin/python benchmarks/memory.py --work /tmp/gpt2-small --only triform

Each case runs in a process of its own, so that its peak resident memory (getrusage's ru_maxrss:
the weights, gradients, optimizer state, activations and the interpreter with torch) is its own:
triform full fine-tuning in fp32; full with activation checkpointing and bf16 autocast; LoRA (rank 8
on every attention projection) with checkpointing and bf16; and the same three in Hugging Face
transformers (GPT2LMHeadModel, torch's AdamW, `gradient_checkpointing_enable`, peft's LoRA when peft
is installed), on the same weights and token ids. A step is forward, loss, backward and an
optimizer step; the first is a warm-up, the median of the others is reported. triform's cases keep
freed host memory for the next step where `triform train` would (kernels/host_memory.py), or with
--keep-freed-memory (results then in memory-kept.json and .md). Results go to
benchmarks/memory.json and benchmarks/memory.md; the machine may be shared (the load average is
recorded), so the times are rough and the memory is the claim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH, LENGTH, RANK, ALPHA = 8, 512, 8, 16.0
CASES = {
    "triform-full-fp32": dict(system="triform", lora=False, checkpointing=False, precision="fp32"),
    "triform-full-ckpt-bf16": dict(system="triform", lora=False, checkpointing=True, precision="bf16"),
    "triform-lora-ckpt-bf16": dict(system="triform", lora=True, checkpointing=True, precision="bf16"),
    "hf-full-fp32": dict(system="hf", lora=False, checkpointing=False, precision="fp32"),
    "hf-full-ckpt-bf16": dict(system="hf", lora=False, checkpointing=True, precision="bf16"),
    "hf-peft-lora-ckpt-bf16": dict(system="hf", lora=True, checkpointing=True, precision="bf16"),
}
# The same optimizer step (8 x 512 tokens, the same gradient) in 8 micro-batches of one row
# (`--train.grad_accum 8`): the logits of one row (512 x 50,257) live at a time instead of eight rows'.
for _name in ("triform-full-ckpt-bf16", "triform-lora-ckpt-bf16", "hf-full-ckpt-bf16", "hf-peft-lora-ckpt-bf16"):
    CASES[f"{_name}-accum8"] = {**CASES[_name], "accumulation": 8}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def token_ids(vocab_size: int, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(vocab_size, (BATCH, LENGTH + 1), generator=generator)


def triform_case(folder: Path, case: dict):
    """The model folder loaded as `triform train --init` loads it, adapted as --lora / --train flags do."""
    import torch

    from triform.checkpoint import load_model
    from triform.kernels.loss import cross_entropy, logits_released
    from triform.models.lora import LoraOptions
    from triform.precision import autocast
    from triform.train.config import LoopConfig, OptimConfig
    from triform.train.optim import build_optimizer
    from triform.train.run import adapt_for_training

    model = load_model(folder).model.train()
    lora = LoraOptions(rank=RANK, alpha=ALPHA, targets="qkv,out") if case["lora"] else LoraOptions()
    adapt_for_training(model, lora, LoopConfig(activation_checkpointing=case["checkpointing"]))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-4), torch.device("cpu"))
    ids = token_ids(model.config.vocab_size)
    micro = BATCH // case.get("accumulation", 1)

    def step():
        total = 0.0
        for rows in ids.split(micro):  # equal micro-batches: each weighs 1 / their number, as in the trainer
            with autocast(case["precision"], torch.device("cpu")):
                logits = model(rows[:, :-1], "causal")  # (micro, T, vocab)
            with logits_released():  # as the trainer does: the gradient may take the logits' memory
                loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
            del logits  # not kept through the backward pass and the update
            (loss * micro / BATCH).backward()
            total += float(loss.detach()) * micro / BATCH
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    return model, step


def hf_case(folder: Path, case: dict):
    """transformers' own way: labels given to the model, which shifts them and computes the loss."""
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).train()
    if case["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if case["lora"]:
        from peft import LoraConfig, get_peft_model

        # GPT-2 keeps q, k, v in one Conv1D (c_attn): peft gives it one adapter of rank r.
        targets = ["attn.c_attn", "attn.c_proj"]
        config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, fan_in_fan_out=True)
        model = get_peft_model(model, config)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.1)
    ids = token_ids(model.config.vocab_size)[:, :LENGTH]
    micro = BATCH // case.get("accumulation", 1)

    def step():
        total = 0.0
        for rows in ids.split(micro):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case["precision"] == "bf16"):
                loss = model(input_ids=rows, labels=rows).loss
            (loss * micro / BATCH).backward()  # transformers keeps no reference to its logits here either
            total += float(loss.detach()) * micro / BATCH
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    return model, step


def run_case(name: str, work: Path, steps: int, keep: bool = False) -> dict:
    """One case, in this process: the figures as a dict. triform's steps keep freed host memory for
    reuse where `triform train` would (--train.keep_freed_memory), or with `keep`."""
    from triform.kernels.host_memory import freed_memory_kept
    from triform.train.config import LoopConfig

    case = CASES[name]
    folder = work / ("triform" if case["system"] == "triform" else "hf")
    with freed_memory_kept(case["system"] == "triform" and (keep or LoopConfig.keep_freed_memory)) as kept:
        started = time.perf_counter()
        model, step = (triform_case if case["system"] == "triform" else hf_case)(folder, case)
        load_s = time.perf_counter() - started
        after_load = peak_rss_gib()
        times, losses = [], []
        for _ in range(steps + 1):
            began = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - began)
        peak = peak_rss_gib()
    parameters = list({id(p): p for p in model.parameters()}.values())
    return {
        "case": name,
        **case,
        "peak_rss_gib": round(peak, 3),
        "rss_after_load_gib": round(after_load, 3),
        "load_s": round(load_s, 2),
        "parameters": sum(p.numel() for p in parameters),
        "trainable": sum(p.numel() for p in parameters if p.requires_grad),
        "step_s": round(statistics.median(times[1:]), 2),
        "first_step_s": round(times[0], 2),
        "losses": [round(x, 4) for x in losses],
        "load_average": os.getloadavg()[0],
        "freed_memory_kept": kept,
    }


def available(name: str) -> bool:
    if CASES[name]["system"] == "hf" and CASES[name]["lora"]:
        try:
            import peft  # noqa: F401
        except ImportError:
            return False
    return True


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def table(results: list[dict], cpu: str, command: str) -> str:
    lines = [
        f"GPT-2 small (124M), batch {BATCH} x {LENGTH} tokens, AdamW; LoRA rank {RANK} on the attention projections.",
        f"CPU: {cpu}, {os.cpu_count()} cores (load average at each case in the JSON beside this file).",
        f"Command: `{command}`",
        "",
        "| case | micro-batch | peak RSS (GiB) | trainable parameters | step (s) | load average |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        micro = BATCH // r.get("accumulation", 1)
        lines.append(
            f"| {r['case']} | {micro} x {LENGTH} | {r['peak_rss_gib']:.2f} | {r['trainable'] / 1e6:.2f}M "
            f"| {r['step_s']:.0f} | {r['load_average']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def merged(results: list[dict], path: Path) -> list[dict]:
    """These results with those `path` holds for the other cases, in CASES' order."""
    by_case = {r["case"]: r for r in json.loads(path.read_text())["results"]} if path.is_file() else {}
    by_case.update({r["case"]: r for r in results})
    return [by_case[name] for name in CASES if name in by_case]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="where the GPT-2 small folders are (made if missing)")
    parser.add_argument("--only", nargs="*", default=None, help="cases whose name contains one of these words")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="triform's steps keep freed host memory, as --train.keep_freed_memory true does; results go to "
        "memory-kept.json and memory-kept.md",
    )
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.work, args.steps, args.keep_freed_memory)))
        return
    sys.path.insert(0, str(HERE))
    from gpt2_small import prepare

    prepare(args.work)
    names = [n for n in CASES if not args.only or any(word in n for word in args.only)]
    results = []
    for name in names:
        if not available(name):
            print(f"{name}: skipped (peft is not installed)", file=sys.stderr)
            continue
        command = [sys.executable, __file__, "--work", str(args.work), "--steps", str(args.steps), "--case", name]
        command += ["--keep-freed-memory"] if args.keep_freed_memory else []
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{name}: failed")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    cpu = cpu_name()
    prefix = HERE / ("memory-kept" if args.keep_freed_memory else "memory")
    shown = "nice -n 10 .venv/bin/python benchmarks/memory.py --work /tmp/gpt2-small"
    shown += " --keep-freed-memory" if args.keep_freed_memory else ""
    results = merged(results, prefix.with_suffix(".json"))  # a run of some cases replaces those, keeps the others
    prefix.with_suffix(".json").write_text(json.dumps({"cpu": cpu, "results": results}, indent=2) + "\n")
    title = "# Fine-tuning memory at GPT-2 small's size" + (", freed memory kept" if args.keep_freed_memory else "")
    prefix.with_suffix(".md").write_text(f"{title}\n\n" + table(results, cpu, shown))
    print(table(results, cpu, shown))


if __name__ == "__main__":
    main()
