"""Train and evaluate on the shared real data and write the training section of docs/results.md.

    .venv/bin/python scripts/results_training.py [--data ../shared/data] [--minutes 3]

Runs, each a few minutes on 2 CPU cores: tiny-gpt (clm) and tiny-bert (mlm) on Brown, the first
killed with SIGKILL after its first checkpoint and resumed; a tiny Vaswani Transformer (seq2seq) on
lohelp-en-de; then `triform eval` on each. Figures are read from the runs' own outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRIFORM = [sys.executable, "-m", "triform"]


def command_line(argv: list[str]) -> str:
    return "triform " + " ".join(a if " " not in a else f"'{a}'" for a in argv)


def run(argv: list[str], log: Path) -> None:
    print("$", command_line(argv), flush=True)
    with open(log, "a") as file:
        completed = subprocess.run(TRIFORM + argv, stdout=file, stderr=subprocess.STDOUT, cwd=ROOT)
    if completed.returncode:
        sys.exit(f"failed ({completed.returncode}): {command_line(argv)}; see {log}")


def run_and_kill(argv: list[str], run_dir: Path, log: Path, after_step: int) -> int:
    """Start a run, SIGKILL it once the checkpoint of `after_step` exists; returns the step it had logged."""
    print("$", command_line(argv), " # killed with SIGKILL after its first checkpoint", flush=True)
    with open(log, "a") as file:
        process = subprocess.Popen(TRIFORM + argv, stdout=file, stderr=subprocess.STDOUT, cwd=ROOT)
        marker = run_dir / "checkpoints" / f"step-{after_step:07d}" / "trainer.pt"
        while not marker.exists() and process.poll() is None:
            time.sleep(0.2)
        time.sleep(5)  # let it train on past the checkpoint, so the resume has work to redo
        process.send_signal(signal.SIGKILL)
        process.wait()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(r["step"] for r in records)


def train_summary(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    rates = [r["tokens_per_s"] for r in train[1:]] or [train[0]["tokens_per_s"]]
    return {"steps": train[-1]["step"], "tokens": train[-1]["tokens"], "first_loss": train[0]["loss"],
            "last_loss": train[-1]["loss"], "tokens_per_s": sum(rates) / len(rates), "minutes": train[-1]["elapsed_s"] / 60}  # fmt: skip


def evaluate(argv: list[str], output: Path, log: Path) -> dict:
    run(argv + ["--output", str(output)], log)
    return json.loads(output.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "results"))
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of each run")
    args = parser.parse_args()
    data, runs = Path(args.data), Path(args.runs)
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    log = runs / "log.txt"
    brown, lohelp = data / "brown", data / "lohelp-en-de"
    common = ["--train.steps", str(args.steps), "--train.batch_size", "32", "--train.log_every", "25",
              "--train.eval_every", "100", "--train.checkpoint_every", "100", "--optim.warmup_steps", "30"]  # fmt: skip
    results, commands = {}, {}

    gpt = runs / "brown-gpt"
    gpt_argv = ["train", "--preset", "tiny-gpt", "--data.train", str(brown / "train.txt"), "--data.valid",
                str(brown / "valid.txt"), "--run_dir", str(gpt), *common]  # fmt: skip
    killed_at = run_and_kill(gpt_argv, gpt, log, after_step=100)
    run(gpt_argv + ["--resume", "true"], log)
    results["gpt"] = {**train_summary(gpt), "killed_at": killed_at,
                      **evaluate(["eval", "--model", str(gpt), "--data", str(brown / "valid.txt")], runs / "gpt-eval.json", log)}  # fmt: skip
    commands["gpt"] = [gpt_argv, gpt_argv + ["--resume", "true"], ["eval", "--model", str(gpt), "--data", str(brown / "valid.txt")]]

    bert = runs / "brown-bert"
    bert_argv = ["train", "--preset", "tiny-bert", "--objective.whole_word", "true", "--data.train", str(brown / "train.txt"),
                 "--data.valid", str(brown / "valid.txt"), "--run_dir", str(bert), *common]  # fmt: skip
    run(bert_argv, log)
    bert_eval = ["eval", "--model", str(bert), "--data", str(brown / "valid.txt")]
    results["bert"] = {**train_summary(bert), **evaluate(bert_eval, runs / "bert-eval.json", log)}
    commands["bert"] = [bert_argv, bert_eval]

    mt = runs / "lohelp-vaswani"
    mt_argv = ["train", "--preset", "tiny-vaswani", "--data.train", str(lohelp / "train.tsv"), "--data.valid",
               str(lohelp / "valid.tsv"), "--data.too_long", "skip", "--run_dir", str(mt), *common]  # fmt: skip
    run(mt_argv, log)
    mt_eval = ["eval", "--model", str(mt), "--data", str(lohelp / "valid.tsv"), "--too_long", "skip", "--max_examples", "500"]
    results["mt"] = {**train_summary(mt), **evaluate(mt_eval, runs / "mt-eval.json", log)}
    commands["mt"] = [mt_argv, mt_eval]

    figures = ROOT / "docs" / "results"
    figures.mkdir(parents=True, exist_ok=True)
    for name, run_dir in (("gpt", gpt), ("bert", bert), ("mt", mt)):
        shutil.copy(run_dir / "loss.png", figures / f"training-{name}.png")
    (runs / "results.json").write_text(json.dumps(results, indent=2))
    replace_section("training", render(results, commands, data))
    print("wrote docs/results.md (section training)")


def shown(argv: list[str], data: Path) -> str:
    return command_line(argv).replace(str(data), "../shared/data").replace(str(ROOT) + "/", "")


def render(results: dict, commands: dict, data: Path) -> str:
    gpt, bert, mt = results["gpt"], results["bert"], results["mt"]
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    lines = [
        "## Training on real text",
        "",
        f"Written by `scripts/results_training.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, "
        f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other work ({threads} thread(s) per process), "
        "bf16 autocast (the CPU has AVX512-BF16). Throughput depends on what else runs on the machine.",
        "",
        "| run | steps | tokens | minutes | tokens/s | train loss first → last | validation (`triform eval`) |",
        "|---|---|---|---|---|---|---|",
        f"| tiny-gpt, clm, Brown | {gpt['steps']} | {gpt['tokens']:,} | {gpt['minutes']:.1f} | {gpt['tokens_per_s']:,.0f} | "
        f"{gpt['first_loss']:.2f} → {gpt['last_loss']:.2f} | perplexity {gpt['perplexity']:.1f}, next-token accuracy {100 * gpt['accuracy']:.1f} % |",
        f"| tiny-bert, mlm (whole words), Brown | {bert['steps']} | {bert['tokens']:,} | {bert['minutes']:.1f} | {bert['tokens_per_s']:,.0f} | "
        f"{bert['first_loss']:.2f} → {bert['last_loss']:.2f} | masked-token accuracy {100 * bert['accuracy']:.1f} %, perplexity of masked tokens "
        f"{bert['perplexity']:.1f}, pseudo-perplexity {bert['pseudo_perplexity']:.1f} ({bert['pseudo_perplexity_tokens']} tokens) |",
        f"| tiny-vaswani, seq2seq, lohelp en→de | {mt['steps']} | {mt['tokens']:,} | {mt['minutes']:.1f} | {mt['tokens_per_s']:,.0f} | "
        f"{mt['first_loss']:.2f} → {mt['last_loss']:.2f} | BLEU {mt['bleu']:.2f}, chrF {mt['chrf']:.2f} (greedy, {mt['examples']} pairs), perplexity {mt['perplexity']:.1f} |",
        "",
        f"The tiny-gpt run was killed with SIGKILL at step {gpt['killed_at']} (after its checkpoint at step 100) and resumed "
        "with `--resume true`: it continued from the checkpoint and finished; `tests/test_train.py` checks that such a resumed "
        "run logs exactly the losses of an uninterrupted one.",
        "",
        f"BLEU signature `{mt['bleu_signature']}`, chrF signature `{mt['chrf_signature']}`. These are minutes-long runs of "
        "models with 2 layers of width 64 (d_model 64): the figures show the pipeline working on real data, not trained quality.",
        f"Example translation: “{mt['example_translation']}” (reference: “{mt['example_reference']}”).",
        "",
        "Commands (from the repository root, after `make setup`; `triform` is `.venv/bin/triform`):",
        "",
        "```sh",
        *[shown(argv, data) for group in commands.values() for argv in group],
        "```",
        "",
        "Loss curves (train and validation) as the runs drew them:",
        "",
        "![tiny-gpt on Brown](results/training-gpt.png) ![tiny-bert on Brown](results/training-bert.png) "
        "![tiny-vaswani on lohelp](results/training-mt.png)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
