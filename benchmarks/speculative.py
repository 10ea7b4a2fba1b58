"""Speculative decoding's speed-up: a `small-gpt` decoding greedily alone and with a `tiny-gpt` draft.

    .venv/bin/python benchmarks/speculative.py                 # prints the table
    .venv/bin/python benchmarks/speculative.py --write         # also writes it into docs/results.md
    .venv/bin/python benchmarks/speculative.py --compile       # one-token steps compiled (GenerationConfig.compile)

Both models are trained on Brown with one tokenizer by scripts/results_quantize.py (run it first);
random models agree too rarely for a draft to pay. The prompts are the first words of Brown validation
sentences, decoded at batch 1, the case speculative decoding serves; outputs end at [EOS] or after
--new_tokens tokens. The variants alternate in one process (plain, k = 2, k = 4, ...);
a speed-up is the median of paired ratios; the acceptance rate is the share of proposals kept.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import write_section
from speed.machine import cpu_name
from speed.timing import alternate, paired_ratio

from triform.generate import GenerationConfig, TextGenerator, generate_ids
from triform.generate.speculative import speculative_ids

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "results" / "quantize"
BEGIN, END = "<!-- results:speculative -->", "<!-- /results:speculative -->"


def prompts_from(path: Path, generator: TextGenerator, n: int, words: int) -> list[list[int]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if len(line.split()) > words]
    return [generator.encode(" ".join(line.split()[:words])) for line in lines[:n]]


def n_parameters(folder: Path) -> int:
    """Parameters of the model in `folder` as trained (before any quantization)."""
    return sum(p.numel() for p in TextGenerator.load(folder).model.parameters())


def measure(args) -> tuple[dict, list[dict]]:
    target = TextGenerator.load(args.model, quantize=args.quantize)
    draft = TextGenerator.load(args.draft, quantize=args.quantize)
    target.with_draft(draft)  # checks that the tokenizers match
    prompts = prompts_from(args.prompts, target, args.n_prompts, args.words)
    # Outputs end at [EOS] as they would: forcing the length makes both models pick their second choice
    # after a sentence's end, where briefly trained models disagree most. Greedy outputs are the same
    # with and without the draft, so both sides write the same tokens.
    config = GenerationConfig(max_new_tokens=args.new_tokens, precision=args.precision, compile=args.compile)
    outputs, stats = {}, {}

    def plain():
        outputs["plain"] = [r.tokens for p in prompts for r in generate_ids(target.model, target.layout, [p], config)]

    def drafted(k):
        def run():
            rows, stats[k] = speculative_ids(target.model, draft.model, target.layout, prompts, config, k=k)
            outputs[k] = [r.tokens for r in rows]

        return run

    variants = {"plain": plain, **{f"k={k}": drafted(k) for k in args.k}}
    timing = alternate(variants, warmup=1, repeats=args.repeats, label="speculative")
    seconds = timing["seconds"]
    n_tokens = sum(len(tokens) for tokens in outputs["plain"])
    rows = [
        {
            "variant": name,
            "ms_per_token": 1e3 * statistics.median(seconds[name]) / n_tokens,
            "speedup": 1.0 if name == "plain" else paired_ratio(seconds["plain"], seconds[name]),
            "acceptance": None if name == "plain" else stats[int(name[2:])].rate,
            "tokens_per_pass": None if name == "plain" else stats[int(name[2:])].tokens_per_pass,
            "identical": outputs[name if name == "plain" else int(name[2:])] == outputs["plain"],
        }
        for name in variants
    ]
    sizes = {
        "model": n_parameters(args.model),
        "draft": n_parameters(args.draft),
        "load": timing["load"],
        "tokens": n_tokens,
    }
    return sizes, rows


def table(sizes: dict, rows: list[dict], args) -> str:
    lines = [
        f"Greedy decoding at batch 1 of {args.n_prompts} Brown prompts ({args.words} words each; at most "
        f"{args.new_tokens} new tokens, {sizes['tokens']} in all) by `{Path(args.model).parent.name}` "
        f"({sizes['model'] / 1e6:.1f}M "
        f"parameters: the tiny-gpt preset at d_model 256, 4 layers) alone and with `{Path(args.draft).parent.name}` "
        f"({sizes['draft'] / 1e6:.2f}M) as its draft, both trained briefly on Brown by "
        f"scripts/results_quantize.py; precision {args.precision}"
        + (f", both quantized to {args.quantize}" if args.quantize else "")
        + ("; one-token steps compiled (`--compile`: plain decoding's and the draft's)" if args.compile else "")
        + f"; {cpu_name()}, {torch.get_num_threads()} thread(s), load average {min(sizes['load']):.1f} to "
        f"{max(sizes['load']):.1f} on a shared machine; median of {args.repeats} alternating rounds. Written by "
        f"`python benchmarks/speculative.py{' --compile' if args.compile else ''} --write`.",
        "",
        "| decoding | ms per token | speed-up | proposals kept | tokens per pass of the model | outputs = plain |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        kept = "" if r["acceptance"] is None else f"{100 * r['acceptance']:.0f} %"
        per_pass = "1" if r["tokens_per_pass"] is None else f"{r['tokens_per_pass']:.2f}"
        lines.append(
            f"| {'plain greedy' if r['variant'] == 'plain' else 'draft, ' + r['variant']} | {r['ms_per_token']:.2f} "
            f"| {r['speedup']:.2f}× | {kept} | {per_pass} | {'yes' if r['identical'] else '**no**'} |"
        )
    lines += [
        "",
        "Leviathan et al. 2023 (§3.4) expect a speed-up of (1 − α^(k+1)) / ((1 − α)(k·c + 1)) for an acceptance "
        "rate α and a draft step costing c model steps, with a pass over k + 1 tokens costing one step. Here the "
        "draft, a tenth of the model's parameters, costs a quarter to a third of its step (the per-step cost of "
        "calling its layers, and an output projection over the same 8192 tokens), the model's pass over k + 1 "
        "tokens costs more than one step, and briefly trained models agree on about half of the proposals: "
        "the draft pays only where α is high and c small. Greedy outputs equal plain decoding in fp32; with int8 "
        "weights a pass over k + 1 rows rounds its activations with one scale for all of them, so a greedy choice "
        "within rounding may differ from one-row decoding.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=RUNS / "brown-small-gpt" / "model")
    parser.add_argument("--draft", type=Path, default=RUNS / "brown-tiny-gpt" / "model")
    parser.add_argument("--prompts", type=Path, default=ROOT.parent / "shared" / "data" / "brown" / "valid.txt")
    parser.add_argument("--n_prompts", type=int, default=12)
    parser.add_argument("--words", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=48)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--precision", default="fp32", help="fp32: greedy outputs equal bit for bit (see below)")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compile", action="store_true", help="one-token steps compiled (plain decoding's, the draft's)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes, rows = measure(args)
    text = table(sizes, rows, args)
    print(text)
    if args.write:
        parts = [part for part in (args.quantize, "compiled" if args.compile else None) if part]
        suffix = "".join(f"-{part}" for part in parts)  # a section of its own for each setting
        heading = "Speculative decoding: a small model with a tiny draft" + "".join(f", {part}" for part in parts)
        write_section(text, heading, BEGIN.replace(" -->", f"{suffix} -->"), END.replace(" -->", f"{suffix} -->"))


if __name__ == "__main__":
    main()
