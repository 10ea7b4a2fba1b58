"""Run `triform compare` on the Brown corpus and write the compare section of docs/results.md.

    .venv/bin/python scripts/results_compare.py [--data ../shared/data/brown] [--budget 8e10] [--jobs 1]

The budget (tokens x non-embedding parameters per pretraining) sets the time: the default took
10 minutes on one CPU core (one thread), and takes two to three times that when the core is shared.
Rerunning with the same settings reuses the finished runs; `--write-only` rewrites the section from them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import replace_section

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brown"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "results" / "compare-brown"))
    parser.add_argument("--budget", default="8e10")
    parser.add_argument("--repeats", default="2")
    parser.add_argument("--jobs", default="1")
    parser.add_argument("--patterns", default="default")
    parser.add_argument("--write-only", action="store_true")
    args = parser.parse_args()
    data = Path(args.data)
    argv = [
        "compare",
        "--data",
        str(data / "train.txt"),
        "--valid",
        str(data / "valid.txt"),
        "--out",
        args.out,
        "--budget",
        args.budget,
        "--repeats",
        args.repeats,
        "--patterns",
        args.patterns,
        "--jobs",
        args.jobs,
    ]
    started = time.monotonic()
    if not args.write_only:
        print("$ triform", " ".join(argv), flush=True)
        subprocess.run([sys.executable, "-m", "triform", *argv], check=True, cwd=ROOT)
    wall = Path(args.out) / "wall_minutes.json"  # the run's time, kept for a later --write-only
    if not args.write_only:
        wall.write_text(json.dumps((time.monotonic() - started) / 60))
    write_section(
        Path(args.out), argv, json.loads(wall.read_text()) if wall.is_file() else None, args.patterns, int(args.repeats)
    )


def shown_command(argv: list[str]) -> str:
    shown = [a.replace(str(ROOT.parent / "shared"), "../shared").replace(str(ROOT) + "/", "") for a in argv]
    return "triform " + " ".join(shown)


def write_section(out: Path, argv: list[str], minutes: float | None, patterns: str, repeats: int) -> None:
    figures = ROOT / "docs" / "results"
    figures.mkdir(parents=True, exist_ok=True)
    settings = json.loads((out / "compare.json").read_text())
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    partial, tables = "", out
    if not (out / "table.md").is_file():  # an unfinished comparison: tabulate the runs it finished
        from types import SimpleNamespace

        from triform.compare.plan import entries
        from triform.compare.table import write_outputs

        chosen = entries(patterns)
        tables = out / "partial"
        tables.mkdir(exist_ok=True)
        write_outputs(results, chosen, SimpleNamespace(**settings), reference(out), tables)
        partial = f"(an unfinished comparison: {len(results)} of {repeats * len(chosen)} runs) "
    shutil.copyfile(tables / "compare.png", figures / "compare-brown.png")
    table = (tables / "table.md").read_text().strip()
    pretraining = [r["pretraining"] for r in results if "pretraining" in r]
    steps = sorted(p["steps"] for p in pretraining)
    timing = f"{minutes:.0f} minutes" if minutes is not None else "see the runs' own records"
    body = f"""## The T5 comparison in miniature: `triform compare` on Brown

Written by `scripts/results_compare.py` on {time.strftime("%Y-%m-%d")}: torch {torch.__version__}, {platform.machine()} CPU,
2 cores shared with other work, {partial}{timing} for {len(results)} runs ({argv[argv.index("--jobs") + 1]} at a time, one thread each).

```sh
{shown_command(argv)}
```

Every allowed architecture x objective x pattern that pretrains on plain text was pretrained on the Brown
training split with the same compute, {float(settings["budget"]):.0e} tokens x non-embedding parameters
({steps[0]}–{steps[-1]} steps of {settings["batch_size"]} windows of {settings["max_len"]} tokens; a stack of
{settings["n_layers"]} layers or an encoder-decoder of {settings["n_layers"]} + {settings["n_layers"]}, d_model
{settings["d_model"]}, a byte-level BPE of {settings["vocab_size"]} tokens trained on the same text). Each pretrained
model was then fine-tuned three times, once per held-out task, with {settings["finetune"]:g} of that budget, and
scored on Brown's validation split: **next token** (the second half of {settings["eval_windows"]} windows predicted from what precedes),
**masked token** (BERT's 15 % masking, the same for every model, scored where the input shows `[MASK]`) and **restore**, a sequence-to-sequence
task made from the text (a sentence lowercased and stripped of punctuation in, the sentence as written out;
greedy decoding, exact match and chrF). The rows "no pretraining" are the fine-tuning alone. Mean ± standard
deviation over the seeds {", ".join(str(seed) for seed in sorted({r["seed"] for r in results}))}
(initial weights, data order and masks); the best mean of each column is in bold. The last row needs no
model: the context-free guess (the training text's token frequencies; its top guess is always the most
frequent token) on the two token tasks, and the restore task's input copied out unchanged.

{table}

![compare on Brown](results/compare-brown.png)

{findings(results, reference(out), settings, patterns)}
"""
    replace_section("compare", body)
    print(f"wrote the compare section of docs/results.md and {figures / 'compare-brown.png'}")


def reference(out: Path) -> dict:
    path = out / "reference.json"  # the scores that need no model, written by the comparison
    return json.loads(path.read_text()) if path.is_file() else {}


def stack_parameters(settings: dict) -> int:
    """Non-embedding parameters of one stack of the compared models (an encoder-decoder has two)."""
    from dataclasses import fields

    from triform.compare import Settings, model_fields
    from triform.compare.budget import path_parameters
    from triform.config import ModelConfig

    known = {f.name for f in fields(Settings)}
    fields_ = model_fields(Settings(**{k: v for k, v in settings.items() if k in known}))
    return path_parameters(ModelConfig(arch="stack", **fields_))["stack"]


def findings(results: list[dict], no_model: dict, settings: dict, patterns: str) -> str:
    """What the table shows, in words, computed from it (so the words always match the numbers)."""
    from triform.compare.plan import NONE, entries
    from triform.compare.table import SCORES, aggregate, value

    table = aggregate(results, entries(patterns))
    pretrained = [row for row in table if row["entry"].objective != NONE]
    baselines = {row["entry"].arch: row for row in table if row["entry"].objective == NONE}
    lines = [
        "What it shows, read off the table above (a difference counts when it exceeds twice the larger "
        "standard deviation between seeds of the two rows):",
        "",
    ]
    for name, path, percent in SCORES:
        if name == "restore exact match":
            continue
        lower = name.endswith("perplexity")
        sign = -1 if lower else 1
        scale, unit = (100, " %") if percent else (1, "")

        def shown(x: float) -> str:
            return f"{scale * x:.1f}{unit}"

        def better(a: dict, b: dict) -> bool:
            (ma, sa), (mb, sb) = a[name], b[name]
            noise = 2 * max(0.0 if sa != sa else sa, 0.0 if sb != sb else sb)
            return sign * (ma - mb) > noise

        ranked = sorted(pretrained, key=lambda row: -sign * row[name][0])
        best, worst = ranked[0], ranked[-1]
        text = f"- **{name}**: best {best['entry'].label} ({shown(best[name][0])}), worst {worst['entry'].label} ({shown(worst[name][0])})"
        compared = [row for row in pretrained if row["entry"].arch in baselines]
        if compared:
            beaten = sum(better(row, baselines[row["entry"].arch]) for row in compared)
            text += f"; {beaten} of {len(compared)} pretrained models clearly beat the same architecture without pretraining"
        by_arch = {
            arch: max(rows, key=lambda row: sign * row[name][0])
            for arch in ("stack", "encoder-decoder")
            if (rows := [row for row in pretrained if row["entry"].arch == arch])
        }
        if len(by_arch) == 2:
            stack, pair = by_arch["stack"], by_arch["encoder-decoder"]
            verdict = (
                "the best stack is clearly ahead"
                if better(stack, pair)
                else "the best encoder-decoder is clearly ahead"
                if better(pair, stack)
                else "the best of each architecture are within noise"
            )
            text += f"; {verdict} (stack {shown(stack[name][0])}, encoder-decoder {shown(pair[name][0])})"
        if no_model:
            guess = value(no_model, path)
            above = sum(sign * (row[name][0] - guess) > 0 for row in pretrained)
            what = "copying the input" if name.startswith("restore") else "the context-free guess"
            text += f"; {above} of {len(pretrained)} pretrained models do better than {what} ({shown(guess)})"
        lines.append(text + ".")
    twins = [
        (a["entry"].label, b["entry"].label)
        for i, a in enumerate(table)
        for b in table[i + 1 :]
        if all(a[name] == b[name] for name, _, _ in SCORES)
    ]
    for first, second in twins:
        lines.append(
            f"- {first} and {second} score exactly alike, seed for seed: on this architecture the two "
            "objectives make the same training examples (text split at a random point, the decoder "
            "continuing what the encoder read)."
        )
    lines += [
        "",
        f"At this scale (minutes of pretraining of models with {stack_parameters(settings):,} non-embedding "
        "parameters per stack, "
        f"fine-tuned with {settings['finetune']:g} of that compute per task) a difference shows only where the table "
        "says so above; where the "
        "models do no better than the row that needs no model, the budget is too small for that task, and the "
        "table says nothing about what these objectives reach at scale.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
