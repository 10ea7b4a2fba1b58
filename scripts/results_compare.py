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
    shutil.copyfile(out / "compare.png", figures / "compare-brown.png")
    table = (out / "table.md").read_text().strip()
    settings = json.loads((out / "compare.json").read_text())
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    pretraining = [r["pretraining"] for r in results if "pretraining" in r]
    steps = sorted(p["steps"] for p in pretraining)
    timing = f"{minutes:.0f} minutes" if minutes is not None else "see the runs' own records"
    body = f"""## The T5 comparison in miniature: `triform compare` on Brown

Written by `scripts/results_compare.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, {platform.machine()} CPU,
2 cores shared with other work, {timing} for {len(results)} runs ({argv[argv.index('--jobs') + 1]} at a time, one thread each).

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
deviation over {settings.get('repeats', 2) if 'repeats' in settings else len({r['seed'] for r in results})} seeds
(initial weights, data order and masks); the best mean of each column is in bold.

{table}

![compare on Brown](results/compare-brown.png)

WHAT_IT_SHOWS
"""
    replace_section("compare", body)
    print(f"wrote the compare section of docs/results.md and {figures / 'compare-brown.png'}")


if __name__ == "__main__":
    main()
