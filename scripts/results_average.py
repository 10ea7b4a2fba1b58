"""Checkpoint averaging on lohelp-en-de: BLEU of a run's last checkpoint against the average of its last 5,
and the checkpoints averaged, written to docs/results.md (section average).

    .venv/bin/python scripts/results_average.py [--data ../shared/data] [--reuse]

A small encoder-decoder (tiny-vaswani at d_model 128) trains on the English→German pairs for a short
budget (`--train.time_limit`, minutes), keeping its last 5 checkpoints, 100 steps apart, under the
inverse square root schedule of Vaswani et al. 2017 §5.3: the rate is still high at the end, as it is
where they average (§6.1). `triform average` averages the last 5, and `triform eval` translates the
test pairs greedily with each model and scores them with sacrebleu. `--reuse` keeps a finished run
and redoes the averaging and the evaluations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import replace_section

from triform.io import atomic_write
from triform.train.checkpoint import checkpoints
from triform.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
TRIFORM = ["nice", "-n", "10", sys.executable, "-m", "triform"]
LAST = 5
MINUTES = 11  # of training; with the two evaluations, about 15 minutes of one core
EXAMPLES = 800  # test pairs translated per model, spread over the file


def train_argv(data: Path, run_dir: Path) -> list[str]:
    lohelp = data / "lohelp-en-de"
    return [
        "train",
        "--preset",
        "tiny-vaswani",
        *("--model.d_model", "128", "--model.n_heads", "4", "--model.d_ff", "512", "--model.max_len", "256"),
        *("--tokenizer.vocab_size", "4000"),
        *("--data.train", str(lohelp / "train.tsv"), "--data.valid", str(lohelp / "valid.tsv")),
        *("--data.too_long", "skip", "--run_dir", str(run_dir)),
        *("--train.steps", "3000", "--train.batch_size", "64", "--train.log_every", "50"),
        *("--train.eval_every", "1000", "--train.eval_batches", "10"),
        *("--train.checkpoint_every", "100", "--train.keep_last", str(LAST), "--train.time_limit", str(MINUTES)),
        *("--optim.lr", "2e-3", "--optim.schedule", "inverse-sqrt", "--optim.warmup_steps", "300"),
    ]


def eval_argv(data: Path, model: Path, output: Path) -> list[str]:
    test = data / "lohelp-en-de" / "test.tsv"
    return [
        "eval",
        *("--model", str(model), "--data", str(test), "--too_long", "skip"),
        *("--max_examples", str(EXAMPLES), "--precision", "fp32", "--output", str(output)),
    ]


def run(argv: list[str], log: Path) -> float:
    """Run a triform command (one thread, niced: the machine is shared); returns its minutes."""
    print("$ triform", " ".join(argv), flush=True)
    started = time.monotonic()
    with open(log, "a") as file:
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        completed = subprocess.run(TRIFORM + argv, stdout=file, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)
    if completed.returncode:
        sys.exit(f"failed ({completed.returncode}): triform {' '.join(argv)}; see {log}")
    return (time.monotonic() - started) / 60


def execute(data: Path, runs: Path, reuse: bool) -> dict:
    """Train (unless `reuse`), average the last LAST and the last 2 checkpoints, and evaluate every
    checkpoint averaged and both averages on the same test pairs."""
    run_dir, log = runs / "average-lohelp", runs / "average-lohelp.log"
    runs.mkdir(parents=True, exist_ok=True)
    if not reuse:
        shutil.rmtree(run_dir, ignore_errors=True)
        log.unlink(missing_ok=True)
        run(train_argv(data, run_dir), log)
    kept = checkpoints(run_dir)[-LAST:]
    models = {folder.name: folder for folder in kept}
    for count in (LAST, 2):
        models[f"average-last-{count}"] = run_dir / f"average-last-{count}"
        run(average_argv(run_dir, count, models[f"average-last-{count}"]), log)
    results = {"train": training_summary(kept[-1]), "models": {}}
    for name, model in models.items():
        output = runs / f"average-eval-{name}.json"
        run(eval_argv(data, model, output), log)
        results["models"][name] = {"folder": str(model), "step": step_of(model), **json.loads(output.read_text())}
    atomic_write(runs / "average-results.json", json.dumps(results, indent=2))
    return results


def average_argv(run_dir: Path, count: int, output: Path) -> list[str]:
    return ["average", "--run", str(run_dir), "--last", str(count), "--output", str(output)]


def step_of(folder: Path) -> int | list[int]:
    extra = json.loads((folder / "config.json").read_text())["extra"]
    return extra["averaged"]["steps"] if "averaged" in extra else extra["step"]


def training_summary(last: Path) -> dict:
    """Steps and minutes of training as the newest checkpoint records them (a run stopped by its time
    limit saves one at the step it stopped)."""
    state = torch.load(last / "trainer.pt", map_location="cpu", weights_only=True)
    train = [r for r in read_metrics(last.parent.parent) if r["split"] == "train"]
    return {"steps": state["step"], "minutes": state["elapsed"] / 60, "last_loss": train[-1]["loss"]}


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), platform.machine())


def render(results: dict, data: Path) -> str:
    train, models = results["train"], results["models"]
    names = list(models)
    last, averaged, averaged_2 = models[names[LAST - 1]], models[f"average-last-{LAST}"], models["average-last-2"]
    steps = averaged["step"]
    span = 100 * (steps[-1] - steps[0]) / steps[-1]
    span_2 = 100 * (averaged_2["step"][-1] - averaged_2["step"][0]) / steps[-1]
    members = [models[name]["bleu"] for name in names[:LAST]]

    def shown(argv: list[str]) -> str:
        return ("triform " + " ".join(argv)).replace(str(data), "../shared/data").replace(str(ROOT) + "/", "")

    run_dir = Path(last["folder"]).parent.parent
    commands = [
        shown(train_argv(data, run_dir)),
        shown(average_argv(run_dir, LAST, Path(averaged["folder"]))),
        shown(eval_argv(data, Path(last["folder"]), Path("last.json"))),
        shown(eval_argv(data, Path(averaged["folder"]), Path("averaged.json"))),
    ]
    stopped = f", stopped by its {MINUTES}-minute time limit" if train["steps"] < 3000 else ""

    def row(label: str, result: dict) -> str:
        return f"| {label} | {result['bleu']:.2f} | {result['chrf']:.2f} | {result['perplexity']:.1f} |"

    return "\n".join(
        [
            f"## Checkpoint averaging: the last checkpoint and the average of the last {LAST}",
            "",
            f"Written by `scripts/results_average.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, "
            f"{cpu_name()}, {os.cpu_count()} cores shared with other work, one thread per process under "
            f"`nice -n 10`. tiny-vaswani at d_model 128 (1.4M parameters) trained on lohelp-en-de for "
            f"{train['minutes']:.1f} minutes ({train['steps']} steps of 64 pairs{stopped}; train loss "
            f"{train['last_loss']:.2f} at the last logged step) under the inverse square root schedule "
            f"(Vaswani et al. 2017 §5.3), a checkpoint every 100 steps and at the stop, the last {LAST} kept. "
            f"Every model translates the same {last['examples']} test pairs greedily (`triform eval`, fp32).",
            "",
            "| model | BLEU | chrF | perplexity |",
            "|---|---:|---:|---:|",
            *(row(f"checkpoint at step {models[name]['step']}", models[name]) for name in names[:LAST]),
            row(f"**average of the last {LAST}** (steps {', '.join(map(str, steps))})", averaged),
            row(f"average of the last 2 (steps {', '.join(map(str, averaged_2['step']))})", averaged_2),
            "",
            f"**BLEU change from averaging the last {LAST}: {averaged['bleu'] - last['bleu']:+.2f}** against the "
            f"last checkpoint (chrF {averaged['chrf'] - last['chrf']:+.2f}); the mean BLEU of the {LAST} "
            f"checkpoints averaged is {sum(members) / len(members):.2f}, so the average is better than its "
            "typical member but not than the newest one. Vaswani et al. average at the end of 12 hours of "
            "training (§5.2), where 5 checkpoints 10 minutes apart span about 6 % of it; here the 5 span "
            f"{span:.0f} % of a run whose loss is still falling fast, and the average mixes in much weaker early "
            f"models. The average of the last 2, spanning {span_2:.0f} %, scores "
            f"{averaged_2['bleu'] - last['bleu']:+.2f} BLEU (chrF {averaged_2['chrf'] - last['chrf']:+.2f}, "
            f"perplexity {averaged_2['perplexity']:.1f} against {last['perplexity']:.1f}). One short run of a "
            "small model on one test set: the figures say what averaging did here, not what it does for a "
            "trained model.",
            f"sacrebleu signature `{last['bleu_signature']}`.",
            "",
            "```sh",
            *commands,
            "```",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "results"))
    parser.add_argument("--reuse", action="store_true", help="keep the trained run; average and evaluate again")
    parser.add_argument("--render_only", action="store_true", help="rewrite the section from the last results")
    args = parser.parse_args()
    data, runs = Path(args.data), Path(args.runs)
    if args.render_only:
        results = json.loads((runs / "average-results.json").read_text())
    else:
        results = execute(data, runs, args.reuse)
    replace_section("average", render(results, data))
    print("wrote docs/results.md (section average)")


if __name__ == "__main__":
    main()
