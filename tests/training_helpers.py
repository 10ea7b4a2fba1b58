"""Small corpora and tiny runs for the data and training tests (made here, never downloaded)."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = (
    "the cat dog bird sat ran on under a mat tree house quickly slowly red green big small and then it "
    "was is saw found near far old new"
).split()
GERMAN = {w: w[::-1] for w in WORDS}  # a "translation" a tiny model can learn: each word reversed


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + rng.choice(".!?")
        for _ in range(n)
    ]


def write_text(path: Path, n: int = 200, seed: int = 0) -> Path:
    path.write_text("\n".join(sentences(n, seed)) + "\n")
    return path


def write_parallel(path: Path, n: int = 120, seed: int = 0) -> Path:
    lines = []
    for sentence in sentences(n, seed):
        words = sentence[:-1].lower().split()
        lines.append(f"{sentence}\t{' '.join(GERMAN[w] for w in words)}{sentence[-1]}")
    path.write_text("\n".join(lines) + "\n")
    return path


TINY = [
    "--model.d_model",
    "32",
    "--model.n_heads",
    "2",
    "--model.d_ff",
    "64",
    "--model.n_layers",
    "1",
    "--model.max_len",
    "32",
    "--model.vocab_size",
    "200",
    "--model.dropout",
    "0.0",
    "--model.attention_dropout",
    "0.0",
    "--tokenizer.sentinels",
    "8",
    "--tokenizer.min_frequency",
    "1",
    "--train.batch_size",
    "4",
    "--train.log_every",
    "1",
    "--train.eval_batches",
    "2",
    "--optim.warmup_steps",
    "2",
    "--train.precision",
    "fp32",
]


def train_args(run_dir: Path, train: Path, valid: Path | None = None, steps: int = 4, *extra: str) -> list[str]:
    args = ["train", "--run_dir", str(run_dir), "--data.train", str(train), "--train.steps", str(steps), *TINY]
    if valid is not None:
        args += ["--data.valid", str(valid)]
    return args + list(extra)
