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
from results_sections import replace_section

from triform.io import atomic_write
from triform.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
TRIFORM = [sys.executable, "-m", "triform"]


def command_line(argv: list[str], processes: int = 1) -> str:
    program = "torchrun --nproc_per_node 2 -m triform " if processes == 2 else "triform "
    return program + " ".join(a if " " not in a else f"'{a}'" for a in argv)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "triform"]


def run(argv: list[str], log: Path, processes: int = 1) -> None:
    print("$", command_line(argv, processes), flush=True)
    with open(log, "a") as file:
        completed = subprocess.run(
            (TORCHRUN if processes == 2 else TRIFORM) + argv, stdout=file, stderr=subprocess.STDOUT, cwd=ROOT
        )
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
    records = read_metrics(run_dir)
    return max(r["step"] for r in records)


def train_summary(run_dir: Path) -> dict:
    records = read_metrics(run_dir)
    train = [r for r in records if r["split"] == "train"]
    rates = [r["tokens_per_s"] for r in train[1:]] or [train[0]["tokens_per_s"]]
    return {
        "steps": train[-1]["step"],
        "tokens": train[-1]["tokens"],
        "first_loss": train[0]["loss"],
        "last_loss": train[-1]["loss"],
        "tokens_per_s": sum(rates) / len(rates),
        "minutes": train[-1]["elapsed_s"] / 60,
    }


def evaluate(argv: list[str], output: Path, log: Path) -> dict:
    run(argv + ["--output", str(output)], log)
    return json.loads(output.read_text())


STEPS = {
    "gpt": 300,
    "bert": 300,
    "mt": 1200,
    "ddp": 150,
}  # a few minutes each on 2 shared cores; seq2seq batches are smaller


def plan(data: Path, runs: Path) -> dict:
    """name -> (run folder, train command, eval command)."""
    brown, lohelp = data / "brown", data / "lohelp-en-de"

    def common(name: str) -> list[str]:
        return [
            "--train.steps",
            str(STEPS[name]),
            "--train.batch_size",
            "32",
            "--train.log_every",
            "25",
            "--train.eval_every",
            str(STEPS[name] // 3),
            "--train.checkpoint_every",
            "100",
            "--optim.warmup_steps",
            "30",
        ]

    gpt, bert, mt, ddp = runs / "brown-gpt", runs / "brown-bert", runs / "lohelp-vaswani", runs / "brown-gpt-ddp"
    # Brown is one sentence a line, each line continuing the one before: these runs read it as one
    # stream (each line is context for the next), as the figures were first measured.
    brown_data = [
        "--data.train",
        str(brown / "train.txt"),
        "--data.valid",
        str(brown / "valid.txt"),
        "--data.pack",
        "stream",
    ]
    return {
        "gpt": (
            gpt,
            ["train", "--preset", "tiny-gpt", *brown_data, "--run_dir", str(gpt), *common("gpt")],
            ["eval", "--model", str(gpt), "--data", str(brown / "valid.txt")],
        ),
        "bert": (
            bert,
            [
                "train",
                "--preset",
                "tiny-bert",
                "--objective.mlm.whole_word",
                "true",
                *brown_data,
                "--run_dir",
                str(bert),
                *common("bert"),
            ],
            ["eval", "--model", str(bert), "--data", str(brown / "valid.txt")],
        ),
        "mt": (
            mt,
            [
                "train",
                "--preset",
                "tiny-vaswani",
                "--data.train",
                str(lohelp / "train.tsv"),
                "--data.valid",
                str(lohelp / "valid.tsv"),
                "--data.too_long",
                "skip",
                "--run_dir",
                str(mt),
                *common("mt"),
            ],
            [
                "eval",
                "--model",
                str(mt),
                "--data",
                str(lohelp / "valid.tsv"),
                "--too_long",
                "skip",
                "--max_examples",
                "500",
            ],
        ),
        "ddp": (
            ddp,
            ["train", "--preset", "tiny-gpt", *brown_data, "--run_dir", str(ddp), *common("ddp")],
            ["eval", "--model", str(ddp), "--data", str(brown / "valid.txt")],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "results"))
    parser.add_argument("--only", choices=sorted(STEPS), help="redo this run alone, keeping the others' results")
    parser.add_argument(
        "--render_only", action="store_true", help="rewrite the section from the last runs' results.json"
    )
    args = parser.parse_args()
    data, runs = Path(args.data), Path(args.runs)
    runs_plan = plan(data, runs)
    commands = {
        name: [train] + ([train + ["--resume", "true"]] if name == "gpt" else []) + [evaluation]
        for name, (_, train, evaluation) in runs_plan.items()
    }
    if not args.render_only:
        chosen = {name: step for name, step in runs_plan.items() if args.only in (None, name)}
        execute(runs, chosen, keep_others=args.only is not None)
    results = json.loads((runs / "results.json").read_text())
    replace_section("training", render(results, commands, data))
    print("wrote docs/results.md (section training)")


def execute(runs: Path, chosen: dict, keep_others: bool) -> None:
    previous = runs / "results.json"
    results = json.loads(previous.read_text()) if keep_others and previous.is_file() else {}
    if not keep_others:
        shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "log.txt"
    figures = ROOT / "docs" / "results"
    figures.mkdir(parents=True, exist_ok=True)
    for name, (run_dir, train, evaluation) in chosen.items():
        shutil.rmtree(run_dir, ignore_errors=True)
        killed_at = None
        if name == "gpt":  # killed outright once past its first checkpoint, then resumed
            killed_at = run_and_kill(train, run_dir, log, after_step=100)
            run(train + ["--resume", "true"], log)
        else:
            run(train, log, processes=2 if name == "ddp" else 1)
        results[name] = {
            "train": train_summary(run_dir),
            "eval": evaluate(evaluation, runs / f"{name}-eval.json", log),
            "killed_at": killed_at,
        }
        shutil.copy(run_dir / "loss.png", figures / f"training-{name}.png")
        atomic_write(previous, json.dumps(results, indent=2))


def shown(argv: list[str], data: Path, processes: int = 1) -> str:
    return command_line(argv, processes).replace(str(data), "../shared/data").replace(str(ROOT) + "/", "")


def row(label: str, result: dict, validation: str) -> str:
    train = result["train"]
    return (
        f"| {label} | {train['steps']} | {train['tokens']:,} | {train['minutes']:.1f} | {train['tokens_per_s']:,.0f} | "
        f"{train['first_loss']:.2f} → {train['last_loss']:.2f} | {validation} |"
    )


def render(results: dict, commands: dict, data: Path) -> str:
    gpt, bert, mt = (results[name]["eval"] for name in ("gpt", "bert", "mt"))
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    lines = [
        "## Training on real text",
        "",
        f"Written by `scripts/results_training.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, "
        f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other work ({threads} thread(s) per process), "
        "bf16 autocast (the CPU has AVX512-BF16). Throughput depends on what else runs on the machine.",
        "",
        "| run | steps | training tokens | minutes | tokens/s | train loss first → last | validation (`triform "
        "eval`) |",
        "|---|---|---|---|---|---|---|",
        row(
            "tiny-gpt, clm, Brown",
            results["gpt"],
            f"perplexity {gpt['perplexity']:.1f}, next-token accuracy {100 * gpt['accuracy']:.1f} % "
            f"({gpt['tokens']:,} tokens)",
        ),
        row(
            "tiny-bert, mlm (whole words), Brown",
            results["bert"],
            f"masked-token accuracy {100 * bert['accuracy']:.1f} %, perplexity of the masked tokens "
            f"{bert['perplexity']:.1f}, "
            f"pseudo-perplexity {bert['pseudo_perplexity']:.1f} (over {bert['pseudo_perplexity_tokens']} tokens)",
        ),
        row(
            "tiny-vaswani, seq2seq, lohelp en→de",
            results["mt"],
            f"BLEU {mt['bleu']:.2f}, chrF {mt['chrf']:.2f} (greedy, {mt['examples']} pairs), perplexity "
            f"{mt['perplexity']:.1f}",
        ),
        *(
            [
                row(
                    "tiny-gpt, clm, Brown, 2 processes (torchrun, DDP, gloo)",
                    results["ddp"],
                    f"perplexity {results['ddp']['eval']['perplexity']:.1f} (after "
                    f"{results['ddp']['train']['steps']} steps)",
                )
            ]
            if "ddp" in results
            else []
        ),
        "",
        "The tiny-gpt run was killed with SIGKILL 5 s after writing its checkpoint at step 100 (last logged step "
        f"{results['gpt']['killed_at']}) and resumed with `--resume true`: it went on from that checkpoint to the end. "
        "`tests/test_train.py` checks that a resumed run logs exactly the losses of an uninterrupted one.",
        "",
        "These are minutes-long runs of models with 2 layers of width 64: the figures show the pipeline at work on "
        "real data, not what the architectures can reach. The train loss of tiny-vaswani includes its label "
        "smoothing (0.1).",
        f"BLEU signature `{mt['bleu_signature']}`, chrF signature `{mt['chrf_signature']}`. "
        f"Example translation: “{mt['example_translation']}” (reference: “{mt['example_reference']}”).",
        "",
        "Commands (from the repository root, after `make setup`; `triform` is `.venv/bin/triform`):",
        "",
        "```sh",
        *[
            shown(argv, data, 2 if name == "ddp" and argv[0] == "train" else 1)
            for name, group in commands.items()
            for argv in group
        ],
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
