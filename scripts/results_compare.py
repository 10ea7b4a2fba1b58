"""Run `triform compare` on the Brown corpus and write the compare section of docs/results.md.

    .venv/bin/python scripts/results_compare.py [--data ../shared/data/brown] [--budget 5e10] [--jobs 2]

The budget (tokens x non-embedding parameters per pretraining) sets the time: the default takes
about 20 to 30 minutes on 2 CPU cores shared with other work. Rerunning with the same settings
reuses the finished runs; `--write-only` rewrites the section from them.
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
from results_sections import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brown"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "results" / "compare-brown"))
    parser.add_argument("--budget", default="1e10")
    parser.add_argument("--repeats", default="2")
    parser.add_argument("--jobs", default="2")
    parser.add_argument("--patterns", default="default")
    parser.add_argument("--write-only", action="store_true")
    args = parser.parse_args()
    data = Path(args.data)
    argv = ["compare", "--data", str(data / "train.txt"), "--valid", str(data / "valid.txt"), "--out", args.out,
            "--budget", args.budget, "--repeats", args.repeats, "--patterns", args.patterns, "--jobs", args.jobs]  # fmt: skip
    started = time.monotonic()
    if not args.write_only:
        print("$ triform", " ".join(argv), flush=True)
        subprocess.run([sys.executable, "-m", "triform", *argv], check=True, cwd=ROOT)
    minutes = (time.monotonic() - started) / 60
    write_section(Path(args.out), argv, minutes if not args.write_only else None)


def shown_command(argv: list[str]) -> str:
    shown = [a.replace(str(ROOT.parent / "shared"), "../shared").replace(str(ROOT) + "/", "") for a in argv]
    return "triform " + " ".join(shown)


def write_section(out: Path, argv: list[str], minutes: float | None) -> None:
    figures = ROOT / "docs" / "results"
    figures.mkdir(parents=True, exist_ok=True)
    settings = json.loads((out / "compare.json").read_text())
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    partial, tables = "", out
    if not (out / "table.md").is_file():  # an unfinished comparison: tabulate the runs it finished
        from types import SimpleNamespace

        from triform.compare.plan import entries
        from triform.compare.table import write_outputs

        chosen = entries("default")
        tables = out / "partial"
        tables.mkdir(exist_ok=True)
        write_outputs(results, chosen, SimpleNamespace(**settings), {}, tables)
        partial = f"(an unfinished comparison: {len(results)} of {2 * len(chosen)} runs) "
    shutil.copyfile(tables / "compare.png", figures / "compare-brown.png")
    table = (tables / "table.md").read_text().strip()
    pretraining = [r["pretraining"] for r in results if "pretraining" in r]
    steps = sorted(p["steps"] for p in pretraining)
    timing = f"{minutes:.0f} minutes" if minutes is not None else "see the runs' own records"
    body = f"""## The T5 comparison in miniature: `triform compare` on Brown

Written by `scripts/results_compare.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, {platform.machine()} CPU,
2 cores shared with other work, {partial}{timing} for {len(results)} runs ({argv[argv.index('--jobs') + 1]} at a time, one thread each).

```sh
{shown_command(argv)}
```

Every allowed architecture x objective x pattern that pretrains on plain text was pretrained on the Brown
training split with the same compute, {float(settings['budget']):.0e} tokens x non-embedding parameters
({steps[0]}–{steps[-1]} steps of {settings['batch_size']} windows of {settings['max_len']} tokens; a stack of
{settings['n_layers']} layers or an encoder-decoder of {settings['n_layers']} + {settings['n_layers']}, d_model
{settings['d_model']}, a byte-level BPE of {settings['vocab_size']} tokens trained on the same text). Each pretrained
model was then fine-tuned three times, once per held-out task, with {settings['finetune']:g} of that budget, and
scored on Brown's validation split: **next token** (the second half of 256 windows predicted from what precedes),
**masked token** (BERT's 15 % masking, the same positions for every model) and **restore**, a sequence-to-sequence
task made from the text (a sentence lowercased and stripped of punctuation in, the sentence as written out;
greedy decoding, exact match and chrF). The rows "no pretraining" are the fine-tuning alone. Mean ± standard
deviation over the seeds {', '.join(str(seed) for seed in sorted({r['seed'] for r in results}))}
(initial weights, data order and masks); the best mean of each column is in bold.

{table}

![compare on Brown](results/compare-brown.png)

{findings(results)}
"""
    replace_section("compare", body)
    print(f"wrote the compare section of docs/results.md and {figures / 'compare-brown.png'}")


def findings(results: list[dict]) -> str:
    """What the table shows, in words, computed from it (so the words always match the numbers)."""
    from triform.compare.plan import entries
    from triform.compare.table import SCORES, aggregate

    table = aggregate(results, entries("default"))
    lines = ["What it shows, read off the table above:", ""]
    for name, _, percent in SCORES:
        if name == "next-token perplexity" or name == "restore exact match":
            continue
        scale, unit = (100, " %") if percent else (1, "")
        ranked = sorted(table, key=lambda row: -row[name][0])
        best, worst = ranked[0], ranked[-1]
        baselines = {row["entry"].arch: row[name][0] for row in table if row["entry"].objective == "none"}
        compared = [row for row in table if row["entry"].objective != "none" and row["entry"].arch in baselines]
        beaten = [row for row in compared if row[name][0] > baselines[row["entry"].arch]]
        spread = max(row[name][1] for row in table if row[name][1] == row[name][1]) if len(results) > len(table) else float("nan")
        lines.append(
            f"- **{name}**: best {best['entry'].label} ({scale * best[name][0]:.1f}{unit}), worst {worst['entry'].label} "
            f"({scale * worst[name][0]:.1f}{unit})"
            + (f"; {len(beaten)} of {len(compared)} pretrained models beat the same architecture without pretraining" if compared else "")
            + (f"; the largest standard deviation between seeds is {scale * spread:.1f}{unit}, so smaller differences are noise." if spread == spread else ".")
        )
    lines += ["", "At this scale (minutes of pretraining of models with about 100k non-embedding parameters) the "
              "differences are small and the models weak; the table shows the method working end to end on real text, "
              "and which pretraining helps which task when compute is held equal, not what these objectives reach at scale."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
