"""Quality of int8 weights against the float model on real text; writes this machine's quantization
section of docs/results.md.

    nice -n 10 .venv/bin/python scripts/results_quantize.py [--data ../shared/data] [--steps 400]

Trains briefly, one thread per process: a `small-gpt` (the tiny-gpt preset at d_model 256, 4 layers,
as in benchmarks/generation.py) and a `tiny-gpt` draft on its tokenizer, both clm on Brown (the draft
serves benchmarks/speculative.py); and a tiny Vaswani Transformer at d_model 128 on lohelp-en-de. Then
`triform eval` scores each as trained (bf16 autocast on a CPU with native bf16) and with
`--quantize int8`: perplexity on Brown's validation split, BLEU (greedy) on 500 lohelp test pairs;
and, in this process, the small GPT's perplexity in windows short enough that every int8 product takes
fbgemm's path (`decoding_sized_perplexity`), as decoding's do.
Runs that exist are reused (--retrain trains them again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_sections import replace_section

from triform.kernels.int8 import FEW_ROWS
from triform.kernels.machine import this_machine
from triform.precision import resolved_name

ROOT = Path(__file__).resolve().parent.parent
TRIFORM = [sys.executable, "-m", "triform"]
SMALL = ["--model.d_model", "256", "--model.n_heads", "4", "--model.d_ff", "1024", "--model.n_layers", "4"]
RESULTS = ROOT / "docs" / "results.md"
SEQ2SEQ_METRICS = {"perplexity": "lower", "bleu": "higher", "chrf": "higher"}


def command_line(argv: list[str]) -> str:
    return "triform " + " ".join(a if " " not in a else f"'{a}'" for a in argv)


def shown(command: str) -> str:
    """A command as a user types it from the repository root: paths relative to it."""
    return command.replace(str(ROOT) + "/", "").replace(str(ROOT.parent), "..")


def start(argv: list[str], log: Path) -> subprocess.Popen:
    print("$", command_line(argv), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(TRIFORM + argv, stdout=log.open("a"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def wait(processes: list[tuple[subprocess.Popen, list[str]]]) -> None:
    for process, argv in processes:
        if process.wait():
            sys.exit(f"failed ({process.returncode}): {command_line(argv)}")


def training_runs(data: Path, runs: Path, steps: int) -> dict[str, list[str]]:
    brown = ["--data.train", str(data / "brown/train.txt"), "--data.valid", str(data / "brown/valid.txt")]
    common = ["--data.pack", "stream", "--train.batch_size", "16", "--model.max_len", "128", "--optim.lr", "2e-3"]
    lohelp = [
        "--data.train",
        str(data / "lohelp-en-de/train.tsv"),
        "--data.valid",
        str(data / "lohelp-en-de/valid.tsv"),
    ]
    return {
        "small-gpt": [
            "train",
            "--preset",
            "tiny-gpt",
            *SMALL,
            "--tokenizer.vocab_size",
            "8192",
            *brown,
            *common,
            "--run_dir",
            str(runs / "brown-small-gpt"),
            "--train.steps",
            str(steps),
            "--train.eval_every",
            str(steps),
            "--optim.warmup_steps",
            "40",
        ],
        "tiny-gpt draft": [
            "train",
            "--preset",
            "tiny-gpt",
            "--tokenizer.path",
            str(runs / "brown-small-gpt/tokenizer.json"),
            *brown,
            *common,
            "--run_dir",
            str(runs / "brown-tiny-gpt"),
            "--train.steps",
            str(3 * steps),  # a tenth of the small model's compute a step: more steps, for a draft that agrees
            "--train.eval_every",
            str(3 * steps),
            "--optim.warmup_steps",
            "40",
        ],
        "tiny-vaswani d128": [
            "train",
            "--preset",
            "tiny-vaswani",
            "--model.d_model",
            "128",
            "--model.n_heads",
            "4",
            "--model.d_ff",
            "512",
            "--tokenizer.vocab_size",
            "4000",
            *lohelp,
            "--data.too_long",
            "skip",
            "--run_dir",
            str(runs / "lohelp-vaswani"),
            "--train.steps",
            str(2 * steps),
            "--train.batch_size",
            "32",
            "--train.eval_every",
            str(2 * steps),
            "--optim.lr",
            "2e-3",
            "--optim.warmup_steps",
            "100",
        ],
    }


def train_all(data: Path, runs: Path, steps: int, retrain: bool) -> dict[str, float]:
    """Train what is missing; minutes per run (0 for a reused one)."""
    argv = training_runs(data, runs, steps)
    folders = {name: Path(a[a.index("--run_dir") + 1]) for name, a in argv.items()}
    todo = {name for name in argv if retrain or not (folders[name] / "model" / "config.json").exists()}
    minutes = dict.fromkeys(argv, 0.0)
    started = time.monotonic()
    running = {}
    for name in argv:
        if name not in todo:
            continue
        if name == "tiny-gpt draft":  # on the small model's tokenizer, written when its run starts
            while not (folders["small-gpt"] / "tokenizer.json").exists():
                time.sleep(1)
        running[name] = start(argv[name], folders[name] / "train.log")
    for name, process in running.items():
        wait([(process, argv[name])])
        minutes[name] = (time.monotonic() - started) / 60
    return minutes


def evaluate(folder: Path, data: Path, extra: list[str], quantize: str | None) -> dict:
    output = folder / f"eval-{quantize or 'as-trained'}.json"
    if output.exists() and output.stat().st_mtime > (folder / "model" / "config.json").stat().st_mtime:
        return json.loads(output.read_text())  # scored since the model was last trained
    argv = ["eval", "--model", str(folder / "model"), "--data", str(data), *extra, "--output", str(output)]
    if quantize:
        argv += ["--quantize", quantize]
    wait([(start(argv, folder / "eval.log"), argv)])
    return json.loads(output.read_text())


def decoding_sized_perplexity(model_folder: Path, text_file: Path, windows: int = 300) -> tuple[float, float]:
    """(as trained, int8) perplexity over `windows` windows of FEW_ROWS tokens of `text_file`,
    one row each: every product then has decoding's few rows and takes a few rows' int8 kernel (fbgemm's
    or triform's), with its rounding of the activations, where `triform eval`'s full windows may take
    the dequantized product, which rounds none."""
    import math

    import torch.nn.functional as F
    from tokenizers import Tokenizer

    from triform.checkpoint import load_model
    from triform.kernels import quantize
    from triform.precision import autocast

    tokenizer = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
    ids = tokenizer.encode(text_file.read_text()[: 2000 * windows]).ids
    length = FEW_ROWS
    starts = range(0, min(len(ids) - length - 1, windows * length), length)

    def perplexity(model) -> float:
        total, count = 0.0, 0
        with torch.inference_mode(), autocast("auto", torch.device("cpu")):
            for start in starts:
                window = torch.tensor(ids[start : start + length + 1])
                logits = model(window[None, :-1], "causal")[0]
                total += F.cross_entropy(logits.float(), window[1:], reduction="sum").item()
                count += length
        return math.exp(total / count)

    torch.set_num_threads(1)  # as the evaluations' own processes run
    return perplexity(load_model(model_folder).model.eval()), perplexity(
        quantize(load_model(model_folder).model.eval())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "results" / "quantize")
    parser.add_argument("--steps", type=int, default=200, help="training steps of the Brown models (lohelp: twice)")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--evaluate_only", action="store_true", help="score the runs there are; train nothing")
    args = parser.parse_args()
    minutes = {} if args.evaluate_only else train_all(args.data, args.runs, args.steps, args.retrain)
    brown = args.runs / "brown-small-gpt", args.data / "brown/valid.txt", []
    lohelp_test = args.data / "lohelp-en-de/test.tsv"
    lohelp = args.runs / "lohelp-vaswani", lohelp_test, ["--too_long", "skip", "--max_examples", "500"]
    rows = []
    for (folder, data, extra), metrics in ((brown, {"perplexity": "lower"}), (lohelp, SEQ2SEQ_METRICS)):
        as_trained, int8 = evaluate(folder, data, extra, None), evaluate(folder, data, extra, "int8")
        rows += [(folder.name, m, better, as_trained[m], int8[m]) for m, better in metrics.items()]
        if folder == brown[0]:  # the rows of a decoding step, through fbgemm's activation rounding
            metric = f"perplexity in {FEW_ROWS}-token windows, one row each"
            rows.append((folder.name, metric, "lower", *decoding_sized_perplexity(folder / "model", data)))
    machine, as_trained = this_machine(), resolved_name("auto", torch.device("cpu"))
    section = report(rows, args, minutes, machine, as_trained)
    print(section)
    replace_section(f"quantize {machine}", section, RESULTS)  # one section per machine


def report(rows: list[tuple], args, minutes: dict[str, float], machine: str, as_trained: str) -> str:
    lines = [
        f"## Quantization: int8 weights against {as_trained}: {machine}",
        "",
        f"Written by `nice -n 10 python scripts/results_quantize.py --steps {args.steps}` on "
        f"{time.strftime('%Y-%m-%d')}: {machine}, torch {torch.__version__}, one thread per process, on a machine "
        f"shared with other work. `triform eval` scores each model as trained ({as_trained}: "
        f"{'bf16 autocast, the CPU has native bf16' if as_trained == 'bf16' else 'the CPU has no native bf16'}) "
        "and with `--quantize int8` (kernels/int8.py: int8 weights with one scale per output feature). "
        "Perplexity on Brown's validation split; BLEU of greedy decoding on 500 pairs of lohelp-en-de's test split. "
        "`triform eval` scores full windows, whose int8 products take the kernel calibration measured fastest "
        "for many rows (fbgemm's, rounding the activations to 8 bits with one scale per product, or the "
        f"dequantized product, which rounds none); the windowed row scores windows of {FEW_ROWS} tokens, one row "
        "each, whose products take a few rows' kernel (fbgemm's or triform's, rounding the activations to "
        "8 bits, 7 where fbgemm would clip) as a decoding step's do.",
        "",
        f"| model | metric | {as_trained} | int8 | int8 against {as_trained} (relative) | within 1 % |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, metric, better, reference, int8 in rows:
        change = (int8 - reference) / reference if reference else float("nan")
        lines.append(
            f"| {name} | {metric} ({better} is better) | {reference:.3f} | {int8:.3f} | {100 * change:+.2f} % | "
            f"{'yes' if abs(change) <= 0.01 else '**no**'} |"
        )
    trained = ", ".join(f"{name} {value:.1f} min" for name, value in minutes.items() if value)
    trained = trained or "minutes on a loaded machine; the draft is for benchmarks/speculative.py"
    translation = {metric: (reference, int8) for name, metric, _, reference, int8 in rows if name == "lohelp-vaswani"}
    same = all(abs(a - b) < 5e-4 for metric, (a, b) in translation.items() if metric != "perplexity")
    lines += [
        "",
        f"Training ({trained}), commands as run:",
        "",
        "```sh",
        *(shown(command_line(a)) for a in training_runs(args.data, args.runs, args.steps).values()),
        "```",
        "",
        "These are minutes-long runs of small models on a machine shared with other work: the figures compare "
        f"int8 with {as_trained} on the same weights, not what the models can reach. The translation model has not "
        f"learnt to translate yet (BLEU near 0), so its BLEU is a weak check (int8 and {as_trained} score "
        f"{'the same' if same else 'a different'} BLEU and chrF here); its perplexity is the sharper one.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
