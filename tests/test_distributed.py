"""Two CPU processes under torchrun (gloo) train exactly as one process with the same global batch."""

import os
import subprocess
import sys

import pytest
import torch
from training_helpers import train_args, write_text

from triform.checkpoint import load_model
from triform.cli import main
from triform.train.metrics import MetricsLog


def torchrun(argv: list[str]) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "triform",
        *argv,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def train_losses(run_dir):
    return [r["loss"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if r["split"] == "train"]


def assert_same_weights(a, b):
    for (name, x), y in zip(load_model(a).model.state_dict().items(), load_model(b).model.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    train, valid = write_text(folder / "train.txt", 300), write_text(folder / "valid.txt", 40, seed=1)
    tokenizer = folder / "tokenizer.json"
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(train),
                "--kind",
                "wordpiece",
                "--vocab_size",
                "200",
                "--sentinels",
                "8",
                "--min_frequency",
                "1",
                "--output",
                str(tokenizer),
            ]
        )
        == 0
    )
    return train, valid, str(tokenizer)


def test_two_processes_with_ddp_match_one_process(tmp_path, data):
    train, valid, tokenizer = data
    common = ("--preset", "tiny-bert", "--tokenizer.path", tokenizer, "--train.batch_size", "8")
    assert main(train_args(tmp_path / "one", train, valid, 4, *common)) == 0
    torchrun(train_args(tmp_path / "two", train, valid, 4, *common, "--train.grad_accum", "2"))
    assert train_losses(tmp_path / "two") == pytest.approx(train_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "two" / "model", tmp_path / "one" / "model")
    assert not (tmp_path / "two" / "checkpoints" / ".tmp").exists()


def test_fsdp_trains_checkpoints_and_resumes_like_one_process(tmp_path, data):
    train, valid, tokenizer = data
    common = (
        "--preset",
        "tiny-gpt",
        "--tokenizer.path",
        tokenizer,
        "--optim.schedule",
        "constant",
        "--train.checkpoint_every",
        "2",
    )
    assert main(train_args(tmp_path / "one", train, valid, 4, *common)) == 0
    torchrun(train_args(tmp_path / "fsdp", train, valid, 2, *common, "--train.strategy", "fsdp"))
    torchrun(train_args(tmp_path / "fsdp", train, valid, 4, *common, "--train.strategy", "fsdp", "--resume", "true"))
    assert train_losses(tmp_path / "fsdp") == pytest.approx(train_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "fsdp" / "model", tmp_path / "one" / "model")


def test_two_processes_draw_and_log_the_parts_of_a_mixture_as_one_does(tmp_path, data):
    """Every process draws the same part for a micro-batch (the generator is seeded alike), and the
    loss of each part is summed over processes before it is logged."""
    train, valid, tokenizer = data
    mix = '{"mlm": 1, "mlm@right-to-left": 1, "prefix-lm": 1}'
    common = ("--objective.mix", mix, "--objective.mode_tokens", "true", "--tokenizer.path", tokenizer)
    common += ("--train.batch_size", "8")
    assert main(train_args(tmp_path / "one", train, valid, 4, *common)) == 0
    torchrun(train_args(tmp_path / "two", train, valid, 4, *common))

    def parts(run_dir):
        return [r["losses"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if r["split"] == "train"]

    one, two = parts(tmp_path / "one"), parts(tmp_path / "two")
    assert [sorted(p) for p in two] == [sorted(p) for p in one]
    assert [v for p in two for v in p.values()] == pytest.approx([v for p in one for v in p.values()], rel=1e-4)
