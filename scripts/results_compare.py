"""Run `triform compare` on the Brown corpus and write the compare section of docs/results.md.

    .venv/bin/python scripts/results_compare.py [--data ../shared/data/brown] [--budget 8e10] [--jobs 1]
        [--finetune restore=6,next=0.25,masked=0.25,genre=0.5] [--no-labels] [--markdown PATH]

Each held-out task gets its own fraction of the pretraining budget: restore needs about 6 (at 0.25
its models stop far short of copying the input). The genre of each sentence (brown/sentences.tsv)
is a fourth task, split as the text is: a sentence of valid.txt is held out, one of train.txt trains.
The budget (tokens x non-embedding parameters per pretraining) sets the time; see docs/results.md.
Rerunning with the same settings reuses the finished runs; `--write-only` rewrites the section from
them; `--markdown` writes the section (and its figure) elsewhere, for a trial run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
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
    parser.add_argument(
        "--pairs", nargs="*", default=None, help="only these pairs, e.g. stack:clm encoder-decoder:span"
    )
    parser.add_argument("--finetune", default="restore=6,next=0.25,masked=0.25,genre=0.5")
    parser.add_argument("--no-labels", action="store_true", help="without the genre task")
    parser.add_argument("--markdown", default=None, help="write the section here instead of docs/results.md")
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
        "--finetune",
        args.finetune,
    ]
    if args.pairs:
        argv += ["--pairs", json.dumps(args.pairs)]
    if not args.no_labels:
        labels = genre_records(data, Path(args.out + "-labels"))
        argv += ["--labels", str(labels["train"]), "--labels_valid", str(labels["valid"])]
    started = time.monotonic()
    if not args.write_only:
        print("$ triform", " ".join(argv), flush=True)
        # One thread: on a shared machine a second thread mostly spins (tiny models, small batches).
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run([sys.executable, "-m", "triform", *argv], check=True, cwd=ROOT, env=env)
    wall = Path(args.out) / "wall_minutes.json"  # the run's time, kept for a later --write-only
    if not args.write_only:
        wall.write_text(json.dumps((time.monotonic() - started) / 60))
    minutes = json.loads(wall.read_text()) if wall.is_file() else None
    write_section(Path(args.out), argv, minutes, args.patterns, int(args.repeats), args.markdown, args.pairs)


def genre_records(data: Path, folder: Path) -> dict[str, Path]:
    """brown/sentences.tsv as JSONL (text, label: the genre), split as the comparison's text is: a
    sentence in valid.txt is held out, one in train.txt (and not valid.txt) is for fine-tuning, so
    that no held-out sentence was pretrained on."""
    from triform.io import write_jsonl

    valid = set((data / "valid.txt").read_text(encoding="utf-8").splitlines())
    train = set((data / "train.txt").read_text(encoding="utf-8").splitlines()) - valid
    splits: dict[str, list[dict]] = {"train": [], "valid": []}
    seen = set()
    for line in (data / "sentences.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        _, genre, text = line.split("\t")
        split = "valid" if text in valid else "train" if text in train else None
        if split and text not in seen:  # a sentence in two documents counts once
            seen.add(text)
            splits[split].append({"text": text, "label": genre})
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_jsonl(folder / f"genre-{name}.jsonl", records) for name, records in splits.items()}


def shown_command(argv: list[str]) -> str:
    shown = [a.replace(str(ROOT.parent / "shared"), "../shared").replace(str(ROOT) + "/", "") for a in argv]
    return "triform " + " ".join(shlex.quote(a) for a in shown)


def write_section(
    out: Path,
    argv: list[str],
    minutes: float | None,
    patterns: str,
    repeats: int,
    markdown: str | None = None,
    pairs: list[str] | None = None,
) -> None:
    from types import SimpleNamespace

    from triform.compare.findings import findings
    from triform.compare.plan import entries
    from triform.compare.table import aggregate, labels_task, score_columns, write_outputs

    section = Path(markdown) if markdown else None
    figures = section.parent if section else ROOT / "docs" / "results"
    figures.mkdir(parents=True, exist_ok=True)
    settings = json.loads((out / "compare.json").read_text())
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    labelled = labels_task(SimpleNamespace(**settings))
    chosen = entries(patterns, pairs)
    partial, tables = "", out
    if not (out / "table.md").is_file():  # an unfinished comparison: tabulate the runs it finished
        tables = out / "partial"
        tables.mkdir(exist_ok=True)
        write_outputs(results, chosen, SimpleNamespace(**settings), reference(out), tables)
        partial = f"(an unfinished comparison: {len(results)} of {repeats * len(chosen)} runs) "
    figure = figures / ("compare-brown.png" if section is None else section.with_suffix(".png").name)
    shutil.copyfile(tables / "compare.png", figure)
    table = (tables / "table.md").read_text().strip()
    timing = f"{minutes:.0f} minutes" if minutes is not None else "see the runs' own records"
    held_out = json.loads((out / "data" / "data.json").read_text()).get("labels_valid_records", 0)
    aggregated = aggregate(results, chosen, score_columns(labelled))
    facts = dict(partial=partial, timing=timing, table=table, figure=figure.name, labelled=labelled, pairs=pairs)
    facts["findings"] = findings(aggregated, reference(out), labelled)
    body = section_body(settings, results, argv, facts, held_out)
    if section is None:
        replace_section("compare", body)
    else:
        section.write_text(body)
    print(f"wrote the compare section to {section or 'docs/results.md'} and {figure}")


def section_body(settings: dict, results: list[dict], argv: list[str], facts: dict, held_out: int) -> str:
    steps = sorted(r["pretraining"]["steps"] for r in results if "pretraining" in r)
    genre = (
        f", and **{facts['labelled']}**: the genre of a sentence of `brown/sentences.tsv` (15 genres), fine-tuned "
        "with triform's classify task (a pooled head on the body) on the sentences of train.txt and scored on "
        f"{held_out:,} of valid.txt's (accuracy and macro-F1)"
        if facts["labelled"]
        else ""
    )
    return f"""## The T5 comparison in miniature: `triform compare` on Brown

Written by `scripts/results_compare.py` on {time.strftime("%Y-%m-%d")}: torch {torch.__version__}, {platform.machine()} CPU,
2 cores shared with other work, {facts["partial"]}{facts["timing"]} for {len(results)} runs ({argv[argv.index("--jobs") + 1]} at a time, one thread each).

```sh
{shown_command(argv)}
```

{"The pairs named by `--pairs`" if facts["pairs"] else "Every allowed architecture x objective x pattern that pretrains on plain text"} were pretrained on the Brown
training split with the same compute, {float(settings["budget"]):.0e} tokens x non-embedding parameters
({steps[0]}–{steps[-1]} steps of {settings["batch_size"]} windows of {settings["max_len"]} tokens; a stack of
{settings["n_layers"]} layers or an encoder-decoder of {settings["n_layers"]} + {settings["n_layers"]}, d_model
{settings["d_model"]}, a byte-level BPE of {settings["vocab_size"]} tokens trained on the same text). Each pretrained
model was then fine-tuned once per held-out task, each task with its own fraction of that budget (the table
under the scores says what each was given), and scored on Brown's validation split: **next token** (the second
half of {settings["eval_windows"]} windows predicted from what precedes), **masked token** (BERT's 15 % masking,
the same for every model, scored where the input shows `[MASK]`), **restore**, a sequence-to-sequence task made
from the text (a sentence lowercased and stripped of punctuation in, the sentence as written out; greedy
decoding, exact match and chrF){genre}. The rows "no pretraining" are the fine-tuning alone. Mean ± standard
deviation over the seeds {", ".join(str(seed) for seed in sorted({r["seed"] for r in results}))}
(initial weights, data order and masks); the best mean of each column is in bold. The last row needs no
model: the context-free guess (the training text's token frequencies; its top guess is always the most
frequent token) on the two token tasks, the restore task's input copied out unchanged, and the commonest genre.

{facts["table"]}

![compare on Brown](results/{facts["figure"]})

{facts["findings"]}

The head-to-head lines settle two claims at equal pretraining compute, each difference beside the seed
spread of both rows. ELECTRA (Clark et al. 2020) against BERT's masked LM, its paper's comparison, first on
the fine-tuned task the paper judged by (here the genre of a sentence): the paper's direction is ELECTRA
ahead. And each mixture (UL2, UniLM) against each specialist on the specialist's own task (next token for
`clm`, masked token for `mlm`, restore for `span` and `denoise`), on the genre task, and on the mean rank
over all tasks: their papers' claim is that the mixture comes close to each specialist on its task and wins
on average.

At this scale (minutes of pretraining of models with {stack_parameters(settings):,} non-embedding parameters per
stack) a difference shows only where the words above say so; where the models do no better than the row that
needs no model, the budget is too small for that task, and the table says nothing about what these objectives
reach at scale.
"""


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


if __name__ == "__main__":
    main()
