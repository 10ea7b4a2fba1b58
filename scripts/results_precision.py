"""Is bf16 training as good as fp32? The same runs in both precisions and with several seeds; writes
the precision section of docs/results.md and docs/results/precision.png.

    .venv/bin/python scripts/results_precision.py [--data ../shared/data/brown] [--steps 400] [--seeds 2]

A `tiny-gpt` (clm) is trained on Brown with `--train.precision fp32` and `--train.precision bf16`,
each with seeds 0, 1, ... (the seed sets the initial weights and the batch order). bf16 is within
noise when the gap between the precisions' mean validation losses is no larger than the spread
between seeds of one precision. The figures are read from the runs' own metrics.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import replace_section

from triform.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16")


def train_command(data: Path, run_dir: Path, precision: str, seed: int, steps: int) -> list[str]:
    return [
        "train",
        "--preset",
        "tiny-gpt",
        "--data.train",
        str(data / "train.txt"),
        "--data.valid",
        str(data / "valid.txt"),
        "--data.pack",
        "stream",  # Brown's lines continue each other: one stream, as the figures were first measured
        "--run_dir",
        str(run_dir),
        "--train.precision",
        precision,
        "--train.seed",
        str(seed),
        "--train.steps",
        str(steps),
        "--train.batch_size",
        "32",
        "--train.log_every",
        "25",
        "--train.eval_every",
        str(steps // 4),
        "--train.checkpoint_every",
        str(steps),
        "--optim.warmup_steps",
        "30",
    ]


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    records = read_metrics(run_dir)
    return [(r["step"], r["loss"]) for r in records if r["split"] == "valid"]


def train_speed(run_dir: Path) -> float:
    records = read_metrics(run_dir)
    rates = [r["tokens_per_s"] for r in records if r["split"] == "train"][1:]
    return statistics.median(rates)


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for (precision, seed), curve in curves.items():
        axis.plot(
            *zip(*curve),
            color="#3b6fb6" if precision == "fp32" else "#e07b39",
            marker="o",
            markersize=3,
            linestyle="-" if seed == 0 else "--",
            label=f"{precision}, seed {seed}",
        )
    axis.set_xlabel("step")
    axis.set_ylabel("validation loss")
    axis.set_title("tiny-gpt on Brown: fp32 and bf16 autocast", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def render(curves: dict, speeds: dict, example: list[str]) -> str:
    finals = {key: curve[-1][1] for key, curve in curves.items()}
    means = {p: statistics.mean(v for (q, _), v in finals.items() if q == p) for p in PRECISIONS}
    spreads = {
        p: max(v for (q, _), v in finals.items() if q == p) - min(v for (q, _), v in finals.items() if q == p)
        for p in PRECISIONS
    }
    gap, noise = abs(means["bf16"] - means["fp32"]), max(spreads.values())
    verdict = "within" if gap <= noise else "outside"
    rows = [f"| {p} | {s} | {finals[(p, s)]:.4f} | {speeds[(p, s)]:,.0f} |" for p, s in curves]
    return "\n".join(
        [
            "## Precision: training in bf16 autocast against fp32",
            "",
            f"`tiny-gpt` (clm) on Brown, {curves[next(iter(curves))][-1][0]} steps of 32 windows, trained twice per "
            "precision "
            "with different seeds; one process of one thread each. Written by `python scripts/results_precision.py`; "
            f"a run is `triform {' '.join(example)}`.",
            "",
            "| precision | seed | final validation loss | training tokens/s |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            f"Mean final validation loss: fp32 {means['fp32']:.4f}, bf16 {means['bf16']:.4f}; the gap between them, "
            f"{gap:.4f}, is {verdict} the spread between seeds of one precision ({noise:.4f}). "
            "Curves: [precision.png](results/precision.png).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brown"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "results" / "precision"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    data, runs = Path(args.data), Path(args.runs)
    curves, speeds, example = {}, {}, None
    for seed in range(args.seeds):
        for precision in PRECISIONS:
            run_dir = runs / f"{precision}-seed{seed}"
            command = train_command(data, run_dir, precision, seed, args.steps)
            example = example or command
            print("$ triform", " ".join(command), flush=True)
            if not (run_dir / "model").is_dir():
                subprocess.run(
                    [sys.executable, "-m", "triform", *command], check=True, cwd=ROOT, stdout=subprocess.DEVNULL
                )
            curves[(precision, seed)] = validation_curve(run_dir)
            speeds[(precision, seed)] = train_speed(run_dir)
    plot(curves, ROOT / "docs" / "results" / "precision.png")
    example = [
        a.replace(str(data), "../shared/data/brown").replace(str(runs), "runs/results/precision") for a in example
    ]
    replace_section("precision", render(curves, speeds, example))
    print("wrote docs/results.md (section precision)")


if __name__ == "__main__":
    main()
