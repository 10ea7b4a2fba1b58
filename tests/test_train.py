import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from training_helpers import train_args, write_parallel, write_text

from triform.checkpoint import load_model
from triform.cli import build_parser, main
from triform.kernels.calibrate import CACHE_FILE, calibration
from triform.models import build_model
from triform.train.config import RunConfig, from_namespace, resolve
from triform.train.metrics import MetricsLog
from triform.train.run import train


def resolved_from(argv):
    args = build_parser().parse_args(argv)["train"].as_dict()
    args.pop("config", None)
    return resolve(from_namespace(RunConfig, args))


def losses(run_dir, split="train"):
    return [r["loss"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if r["split"] == split]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return write_text(folder / "train.txt", 300), write_text(folder / "valid.txt", 40, seed=1)


@pytest.fixture(scope="module")
def wordpiece(corpus, tmp_path_factory):
    """A shared tokenizer: WordPiece and Unigram training in `tokenizers` is not deterministic,
    so runs compared with each other read the same tokenizer.json."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(corpus[0]),
                "--kind",
                "wordpiece",
                "--vocab_size",
                "200",
                "--sentinels",
                "8",
                "--min_frequency",
                "1",
                "--output",
                str(path),
            ]
        )
        == 0
    )
    return str(path)


@pytest.mark.parametrize("preset, extra", [("tiny-gpt", ()), ("tiny-bert", ("--objective.mlm.whole_word", "true"))])
def test_a_stopped_run_resumes_with_the_losses_of_an_uninterrupted_one(tmp_path, corpus, wordpiece, preset, extra):
    if preset == "tiny-bert":
        extra = (*extra, "--tokenizer.path", wordpiece)
    argv = train_args(tmp_path / "run", *corpus, 8, "--preset", preset, "--model.dropout", "0.1", *extra)
    assert main(train_args(tmp_path / "full", *corpus, 8, "--preset", preset, "--model.dropout", "0.1", *extra)) == 0
    calls = []
    outcome = train(resolved_from(argv), tmp_path / "run", should_stop=lambda: calls.append(1) or len(calls) == 3)
    assert outcome == "stopped" and losses(tmp_path / "run") == losses(tmp_path / "full")[:3]
    assert main(argv + ["--resume", "true"]) == 0
    assert losses(tmp_path / "run") == losses(tmp_path / "full")  # exactly, step by step
    assert losses(tmp_path / "run", "valid") == losses(tmp_path / "full", "valid")
    final, reference = load_model(tmp_path / "run" / "model"), load_model(tmp_path / "full" / "model")
    for (name, a), b in zip(final.model.state_dict().items(), reference.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, corpus):
    def run_args(run_dir, checkpoint_every):
        return train_args(
            run_dir,
            *corpus,
            150,
            "--preset",
            "tiny-gpt",
            "--train.checkpoint_every",
            str(checkpoint_every),
            "--train.eval_every",
            "1000",
            "--model.dropout",
            "0.1",
        )

    assert main(run_args(tmp_path / "full", 1000)) == 0  # uninterrupted, in this process
    # Float sums are bitwise equal only with the same kernels and thread count: the killed process
    # reads the kernels this one chose (kernels/calibrate.py's file) instead of timing its own, where a
    # close race between two candidates could go the other way; and it runs on as many threads as
    # this one (conftest.py sets torch's count, which a child process does not inherit).
    calibration().save(tmp_path / "cache" / CACHE_FILE)
    argv = run_args(tmp_path / "run", 5)
    process = subprocess.Popen(
        [sys.executable, "-m", "triform", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TRIFORM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    deadline = time.monotonic() + 60
    while not list((tmp_path / "run").glob("checkpoints/step-*/trainer.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "run" / "model").exists(), "the run finished before it could be killed"
    assert main(argv + ["--resume", "true"]) == 0
    assert losses(tmp_path / "run") == losses(tmp_path / "full")


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(tmp_path, corpus):
    argv = train_args(tmp_path / "run", *corpus, 5000, "--preset", "tiny-gpt", "--train.checkpoint_every", "5000")
    process = subprocess.Popen(
        [sys.executable, "-m", "triform", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    step = len(losses(tmp_path / "run"))
    assert f"stopped at step {step}; checkpoint saved" in output
    assert (tmp_path / "run" / "checkpoints" / f"step-{step:07d}" / "trainer.pt").is_file()


def test_a_time_limit_stops_with_a_checkpoint(tmp_path, corpus, capsys):
    assert (
        main(train_args(tmp_path / "run", *corpus, 1000, "--preset", "tiny-gpt", "--train.time_limit", "0.0001")) == 0
    )
    step = int(re.search(r"stopped at step (\d+); checkpoint saved", capsys.readouterr().err).group(1))
    assert step < 1000 and (tmp_path / "run" / "checkpoints" / f"step-{step:07d}").is_dir()
    assert not (tmp_path / "run" / "model").exists()


def test_gradient_accumulation_matches_one_large_batch(tmp_path, corpus, wordpiece):
    common = ("--preset", "tiny-bert", "--train.batch_size", "8", "--tokenizer.path", wordpiece)
    assert main(train_args(tmp_path / "one", *corpus, 3, *common)) == 0
    assert main(train_args(tmp_path / "two", *corpus, 3, *common, "--train.grad_accum", "2")) == 0
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


def test_a_run_writes_metrics_a_plot_checkpoints_and_its_resolved_config(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    assert (
        main(
            train_args(
                run,
                *corpus,
                6,
                "--preset",
                "tiny-gpt",
                "--train.eval_every",
                "3",
                "--train.checkpoint_every",
                "2",
                "--train.keep_last",
                "2",
                "--train.log_every",
                "2",
            )
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "tok/s" in err and "ETA" in err and "validation at step 3" in err
    records = MetricsLog(run / "metrics.jsonl").read()
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
    assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6]
    assert all(r["tokens_per_s"] > 0 for r in records if r["split"] == "train")
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000004", "step-0000006"]
    saved = load_model(run / "model")
    recipe = saved.extra["recipe"]
    assert (recipe["objective"], recipe["pattern"]) == ("clm", "causal") and saved.tokenizer is not None
    assert saved.config.vocab_size == saved.tokenizer.get_vocab_size()
    assert (run / "best" / "model.safetensors").is_file()
    again = resolved_from(["train", "--config", str(run / "config.yaml")])
    assert (
        again.to_dict()
        == resolved_from(
            train_args(
                run,
                *corpus,
                6,
                "--preset",
                "tiny-gpt",
                "--train.eval_every",
                "3",
                "--train.checkpoint_every",
                "2",
                "--train.keep_last",
                "2",
                "--train.log_every",
                "2",
            )
        ).to_dict()
    )


def test_an_existing_run_is_never_overwritten(tmp_path, corpus, capsys):
    argv = train_args(tmp_path / "run", *corpus, 2, "--preset", "tiny-gpt")
    assert main(argv) == 0
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert main(argv) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert main(argv + ["--resume", "true", "--model.d_model", "64"]) == 1
    assert "model.d_model: " in capsys.readouterr().err
    other = tmp_path / "other.json"
    assert main(["tokenizer", "train", "--input", str(corpus[1]), "--vocab_size", "300", "--output", str(other)]) == 0
    assert main(argv + ["--resume", "true", "--tokenizer.path", str(other)]) == 1
    assert "tokenizer.json, the tokenizer this run was trained with" in capsys.readouterr().err


def test_bad_training_data_fails_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\nbad \xff line\n")
    assert main(train_args(tmp_path / "run", bad, None, 2, "--preset", "tiny-gpt")) == 1
    assert "bad.txt:2: undecodable bytes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    pairs = write_parallel(tmp_path / "pairs.tsv", 20)
    with open(pairs, "a") as file:
        file.write(" ".join(["big red house"] * 40) + "\tx\n")
    assert main(train_args(tmp_path / "run", pairs, None, 2, "--preset", "tiny-vaswani", "--model.max_len", "128")) == 1
    assert "pairs.tsv:21: too long for model.max_len 128" in capsys.readouterr().err
    assert main(train_args(tmp_path / "run", tmp_path / "bad.txt", None, 2, "--preset", "tiny-vaswani")) == 1
    assert "plain text holds one side only" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "spec",
    [
        ("--preset", "tiny-t5"),
        ("--preset", "tiny-bart"),
        ("--preset", "tiny-gpt", "--objective.name", "prefix-lm"),
        ("--preset", "tiny-vaswani", "--objective.name", "mlm"),
        ("--preset", "tiny-gpt", "--objective.name", "mlm", "--objective.pattern", "causal"),
    ],
)
def test_other_pairs_train_and_evaluate(tmp_path, corpus, spec, capsys):
    assert main(train_args(tmp_path / "run", *corpus, 2, *spec)) == 0
    assert (
        main(["eval", "--model", str(tmp_path / "run"), "--data", str(corpus[1]), "--pseudo_perplexity_tokens", "50"])
        == 0
    )
    out = capsys.readouterr().out
    assert "perplexity" in out and "loss" in out


def test_seq2seq_trains_and_eval_reports_bleu_and_chrf(tmp_path, capsys):
    train_pairs, valid_pairs = (
        write_parallel(tmp_path / "train.tsv", 200),
        write_parallel(tmp_path / "valid.tsv", 6, seed=3),
    )
    for spec in (("--preset", "tiny-vaswani"), ("--preset", "tiny-gpt", "--objective.name", "seq2seq")):
        run = tmp_path / spec[-1]
        # A vocabulary past the 256 bytes, so that BPE merges words and the decoded sequences stay short.
        assert (
            main(
                train_args(
                    run, train_pairs, valid_pairs, 3, *spec, "--model.max_len", "64", "--model.vocab_size", "400"
                )
            )
            == 0
        )
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(run),
                    "--data",
                    str(valid_pairs),
                    "--output",
                    str(run / "eval.json"),
                    "--precision",
                    "fp32",
                ]
            )
            == 0
        )
        metrics = json.loads((run / "eval.json").read_text())
        assert 0 <= metrics["bleu"] <= 100 and 0 <= metrics["chrf"] <= 100 and metrics["examples"] == 6
        assert "nrefs:1" in metrics["bleu_signature"]


def test_eval_refuses_a_tokenizer_that_does_not_match(tmp_path, corpus, capsys):
    assert main(train_args(tmp_path / "run", *corpus, 1, "--preset", "tiny-gpt")) == 0
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(corpus[0]),
                "--vocab_size",
                "150",
                "--output",
                str(tmp_path / "other.json"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(corpus[1]),
                "--tokenizer",
                str(tmp_path / "other.json"),
            ]
        )
        == 1
    )
    assert "differs from" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nothing"), "--data", str(corpus[1])]) == 1
    assert "no model here" in capsys.readouterr().err


def test_training_on_prepared_shards_equals_training_on_the_text(tmp_path, corpus):
    assert main(train_args(tmp_path / "text", *corpus, 3, "--preset", "tiny-gpt")) == 0
    tokenizer = str(tmp_path / "text" / "tokenizer.json")
    for name, path in (("train", corpus[0]), ("valid", corpus[1])):
        assert main(["prepare", "--input", str(path), "--tokenizer", tokenizer, "--output", str(tmp_path / name)]) == 0
    argv = train_args(
        tmp_path / "shards",
        tmp_path / "train",
        tmp_path / "valid",
        3,
        "--preset",
        "tiny-gpt",
        "--tokenizer.path",
        tokenizer,
    )
    assert main(argv) == 0
    assert losses(tmp_path / "shards") == losses(tmp_path / "text")


def test_compile_wraps_the_model_and_checkpoints_its_weights(tmp_path, corpus, monkeypatch):
    """The plumbing of train.compile, with dynamo's eager backend: inductor's C++ build takes a
    minute on 2 cores, too long for a unit test (it is exercised by hand and on GPU machines)."""
    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **options):
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    assert main(train_args(tmp_path / "run", *corpus, 2, "--preset", "tiny-gpt", "--train.compile", "true")) == 0
    assert compiled and sorted(load_model(tmp_path / "run" / "model").model.state_dict()) == sorted(
        compiled[0].state_dict()
    )


def test_compile_blocks_compiles_each_block_and_keeps_the_weights_names(tmp_path, corpus, monkeypatch):
    """train.compile_blocks: every block compiled on its own (dynamo's eager backend, as above), the
    model folder's tensors named as without it."""
    compiled = []
    real_compile = torch.compile

    def eager_compile(function, **options):
        compiled.append(function)
        return real_compile(function, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    argv = train_args(tmp_path / "run", *corpus, 2, "--preset", "tiny-gpt", "--train.compile_blocks", "true")
    assert main(argv) == 0
    blocks = load_model(tmp_path / "run" / "model").model.stack.blocks
    assert len(compiled) == len(blocks) >= 1  # one compilation per block
    names = sorted(load_model(tmp_path / "run" / "model").model.state_dict())
    assert names == sorted(build_model(load_model(tmp_path / "run" / "model").config).state_dict())


def test_precision_and_device_choices(tmp_path, corpus, capsys):
    from triform.precision import autocast_dtype

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert main(train_args(tmp_path / "bf16", *corpus, 1, "--preset", "tiny-gpt", "--train.precision", "bf16")) == 0
    err = capsys.readouterr().err
    assert "on cpu, bf16" in err and ("emulated on this device" in err) != native  # said where bf16 is slow
    if not torch.cuda.is_available():
        assert main(train_args(tmp_path / "cuda", *corpus, 1, "--preset", "tiny-gpt", "--train.device", "cuda")) == 1
        assert "train.device: cuda was asked for, but torch sees no CUDA device" in capsys.readouterr().err


def test_data_bucket_false_gives_plain_shuffled_pairs(tmp_path):
    """Bucketing (the default) sorts seq2seq pairs into batches of similar length; `--data.bucket
    false` keeps the plain shuffle, for data where length goes with content."""
    import numpy as np

    from triform.train.distributed import Processes
    from triform.train.session import build_session

    pairs = write_parallel(tmp_path / "train.tsv", 240)
    orders = {}
    for value in ("true", "false"):
        argv = train_args(
            tmp_path / value,
            pairs,
            None,
            1,
            "--preset",
            "tiny-vaswani",
            "--data.bucket",
            value,
            "--model.max_len",
            "64",
            "--model.vocab_size",
            "400",
        )
        session = build_session(resolved_from(argv), tmp_path / value, Processes())
        orders[value] = (session.batch_order(8, 0), session.train_data.lengths())

    def spread(order, lengths) -> float:  # mean length range within a batch
        return float(np.mean([np.ptp(lengths[order.indices(step)]) for step in range(order.steps_per_epoch)]))

    assert spread(*orders["true"]) < spread(*orders["false"]) / 2
    plain, lengths = orders["false"]
    assert plain.indices(0).tolist() == np.random.default_rng([0, 0]).permutation(len(lengths))[:8].tolist()
    assert resolved_from(train_args(tmp_path / "x", pairs)).config.data.bucket is True


def test_the_loss_s_gradient_over_the_released_logits_trains_exactly_as_without(tmp_path, corpus, monkeypatch):
    """The trainer lets the loss write its gradient over the logits (kernels/loss.py's
    `logits_released`): the same losses, step by step, and the same weights as with the logits kept."""
    argv = ("--preset", "tiny-gpt", "--model.dropout", "0.1")
    assert main(train_args(tmp_path / "released", *corpus, 6, *argv)) == 0
    monkeypatch.setattr("triform.train.loop.logits_released", contextlib.nullcontext)
    assert main(train_args(tmp_path / "kept", *corpus, 6, *argv)) == 0
    assert losses(tmp_path / "released") == losses(tmp_path / "kept")
    released, kept = load_model(tmp_path / "released" / "model"), load_model(tmp_path / "kept" / "model")
    for (name, a), b in zip(released.model.state_dict().items(), kept.model.state_dict().values()):
        assert torch.equal(a, b), name
