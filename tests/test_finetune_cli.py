"""`triform finetune` and `triform predict` end to end, on tiny data and models the tests create."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from task_data import (  # noqa: F401 (one_thread: an autouse fixture)
    choice_rows,
    classify_rows,
    one_thread,
    pair_rows,
    qa_rows,
    regression_rows,
    tag_rows,
    text2text_rows,
    tokenizer,
)

from triform.checkpoint import save_model
from triform.cli import main
from triform.config import ModelConfig
from triform.models import build_model
from triform.tasks.checkpoint import load_task_model
from triform.vocab import SpecialTokens

FAST = ["--train.log_every", "2", "--optim.warmup_steps", "2", "--train.precision", "fp32"]


def pretrained(folder, arch="stack", extra=None, max_len=48, dropout=0.1):
    tok = tokenizer()
    config = ModelConfig(
        arch=arch,
        vocab_size=tok.get_vocab_size(),
        d_model=32,
        n_heads=2,
        d_ff=64,
        n_layers=2,
        max_len=max_len,
        dropout=dropout,
        attention_dropout=dropout,
    )
    save_model(
        build_model(config), folder, specials=SpecialTokens.from_tokenizer(tok), tokenizer=tok, extra=extra or {}
    )
    return str(folder)


def write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return str(path)


def finetune(task, init, train, valid, run_dir, steps, *options):
    argv = [
        "finetune",
        "--task",
        task,
        "--init",
        init,
        "--data.train",
        train,
        "--run_dir",
        str(run_dir),
        "--train.steps",
        str(steps),
        "--train.eval_every",
        str(steps),
        "--train.batch_size",
        "16",
        *FAST,
        *options,
    ]
    if valid:
        argv += ["--data.valid", valid]
    return main(argv)


def test_a_classifier_fine_tuned_from_the_command_line_predicts_a_tsv_file(tmp_path):
    init = pretrained(tmp_path / "bert", extra={"objective": "mlm", "pattern": "bidirectional"})
    train = write(tmp_path / "train.jsonl", classify_rows(400, seed=1))
    valid = write(tmp_path / "valid.jsonl", classify_rows(64, seed=2))
    assert finetune("classify", init, train, valid, tmp_path / "run", 120, "--optim.lr", "3e-3") == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["split"] == "valid" and {"loss", "accuracy", "macro_f1"} <= set(records[-1])
    assert (tmp_path / "run" / "loss.png").is_file() and (tmp_path / "run" / "model" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["extra"]
    assert saved["task"]["labels"] == ["blue", "green", "red"] and saved["task"]["pattern"] == "bidirectional"

    test = [
        {"id": f"s{i}", "sentence": row["text"], "colour": row["label"]}
        for i, row in enumerate(classify_rows(50, seed=3))
    ]
    data = write(tmp_path / "test.tsv", test)
    out, metrics = tmp_path / "predictions.jsonl", tmp_path / "metrics.json"
    argv = [
        "predict",
        "--model",
        str(tmp_path / "run" / "best"),
        "--data",
        data,
        "--output",
        str(out),
        "--metrics",
        str(metrics),
        "--columns",
        '{"text": "sentence", "label": "colour"}',
    ]
    assert main(argv) == 0
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in predictions] == [r["id"] for r in test]
    assert set(predictions[0]["probabilities"]) == {"blue", "green", "red"}
    assert json.loads(metrics.read_text())["accuracy"] >= 0.9


def test_fine_tuning_starts_from_a_model_pretrained_by_triform_train(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "".join(" ".join(r["text_a"].split() + r["text_b"].split()) + "\n" for r in pair_rows(300, seed=0))
    )
    argv = [
        "train",
        "--preset",
        "tiny-gpt",
        "--model.vocab_size",
        "200",
        "--model.max_len",
        "32",
        "--data.train",
        str(corpus),
        "--run_dir",
        str(tmp_path / "gpt"),
        "--train.steps",
        "4",
        "--train.batch_size",
        "8",
        *FAST,
    ]
    assert main(argv) == 0
    train = write(tmp_path / "pairs.csv", pair_rows(64, seed=1))
    assert finetune("pair", str(tmp_path / "gpt" / "model"), train, None, tmp_path / "run", 4) == 0
    task = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["extra"]["task"]
    assert task["pattern"] == "causal" and task["both_orders"] is True  # as pretrained with clm: GPT-1's pair
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(tmp_path / "run" / "model"), "--data", train, "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 64
    int8 = tmp_path / "int8.jsonl"  # the same model with int8 weights predicts every record too
    argv = ["predict", "--model", str(tmp_path / "run" / "model"), "--data", train, "--output", str(int8)]
    assert main([*argv, "--quantize", "int8"]) == 0
    assert len(int8.read_text().splitlines()) == 64
    assert main([*argv, "--quantize", "fp4"]) != 0


@pytest.mark.parametrize(
    "task, rows, arch, options, keys",
    [
        ("choice", choice_rows, "stack", [], {"label", "probabilities"}),
        (
            "qa",
            qa_rows,
            "encoder-decoder",
            ["--qa.stride", "8", "--max_len", "24", "--qa.max_answer_tokens", "4"],
            {"answer", "answer_start", "score"},
        ),
        ("tag", tag_rows, "stack", ["--pattern", "causal", "--lm_weight", "0.5"], {"tags"}),
        ("text2text", text2text_rows, "encoder-decoder", [], {"target"}),
        ("classify", classify_rows, "encoder-decoder", ["--from_scratch", "true"], {"label", "probabilities"}),
        ("classify", regression_rows, "stack", ["--classify.regression", "true"], {"label"}),
        (
            "pair",
            pair_rows,
            "stack",
            ["--pair.both_orders", "false", "--pattern", "causal"],
            {"label", "probabilities"},
        ),
    ],
)
def test_every_task_runs_from_the_command_line(tmp_path, task, rows, arch, options, keys, capsys):
    init = pretrained(tmp_path / "body", arch)
    data = write(tmp_path / "data.jsonl", rows(40, seed=1))
    assert finetune(task, init, data, data, tmp_path / "run", 4, *options) == 0
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(tmp_path / "run" / "best"), "--data", data, "--output", str(out)]) == 0
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(predictions) == 40 and set(predictions[0]) == keys
    assert "metrics: {" in capsys.readouterr().err


def test_unknown_labels_at_prediction_name_the_line_and_write_nothing(tmp_path, capsys):
    init = pretrained(tmp_path / "bert")
    train = write(tmp_path / "train.jsonl", classify_rows(40, seed=1))
    assert finetune("classify", init, train, None, tmp_path / "run", 2) == 0
    capsys.readouterr()
    bad = classify_rows(5, seed=2)
    bad[3]["label"] = "purple"
    data, out = write(tmp_path / "bad.tsv", bad), tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(tmp_path / "run" / "model"), "--data", data, "--output", str(out)]) == 1
    error = capsys.readouterr().err
    assert f"{data}:5: unknown label 'purple'" in error and error.count("\n") == 1
    assert not out.exists()
    unlabelled = write(tmp_path / "unlabelled.jsonl", [{"text": r["text"]} for r in bad])
    assert (
        main(["predict", "--model", str(tmp_path / "run" / "model"), "--data", unlabelled, "--output", str(out)]) == 0
    )
    assert "metrics" not in capsys.readouterr().err and len(out.read_text().splitlines()) == 5


@pytest.mark.parametrize(
    "task, rows, change, message",
    [
        ("classify", classify_rows, lambda r: r[6].pop("text"), ":7: no 'text' column"),
        (
            "qa",
            qa_rows,
            lambda r: r[2].update(answer="zzz", answer_start=None),
            ":3: answer 'zzz' is not in its context",
        ),
        ("tag", tag_rows, lambda r: r[1]["tags"].pop(), ":2: "),
    ],
)
def test_bad_training_data_names_the_line_before_anything_is_written(tmp_path, capsys, task, rows, change, message):
    init = pretrained(tmp_path / "body")
    data = rows(10, seed=1)
    change(data)
    train = write(tmp_path / "train.jsonl", data)
    assert finetune(task, init, train, None, tmp_path / "run", 2) == 1
    error = capsys.readouterr().err
    assert f"{train}{message}" in error and error.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_options_of_another_task_and_plain_models_are_refused(tmp_path, capsys):
    init = pretrained(tmp_path / "bert")
    train = write(tmp_path / "train.jsonl", classify_rows(20, seed=1))
    assert finetune("classify", init, train, None, tmp_path / "run", 2, "--qa.stride", "8") == 1
    assert "qa.stride: applies to the qa task, not classify" in capsys.readouterr().err
    assert finetune("classify", init, train, None, tmp_path / "run", 2, "--max_len", "500") == 1
    assert "max_len: 500 is longer than the model's max_len 48" in capsys.readouterr().err
    assert main(["predict", "--model", init, "--data", train]) == 1
    assert "not a fine-tuned model" in capsys.readouterr().err
    assert finetune("classify", init, train, None, tmp_path / "run", 2, "--data.columns", '{"label": "genre"}') == 1
    assert ":1: no 'genre' column (read as 'label')" in capsys.readouterr().err


def test_a_body_is_read_as_it_was_pretrained():
    from triform.tasks.finetune import default_pattern

    assert default_pattern("stack", "classify", {"objective": "mlm", "pattern": "bidirectional"}) == "bidirectional"
    assert default_pattern("stack", "classify", {"objective": "clm", "pattern": "causal"}) == "causal"
    assert default_pattern("stack", "tag", {"objective": "span", "pattern": "prefix"}) == "bidirectional"
    assert default_pattern("stack", "classify", {"hf": {"model_type": "bert"}}) == "bidirectional"  # imported BERT
    assert default_pattern("stack", "classify", {}) == "causal"
    assert default_pattern("stack", "text2text", {"objective": "clm", "pattern": "causal"}) == "causal"
    assert default_pattern("stack", "text2text", {"objective": "mlm", "pattern": "bidirectional"}) == "prefix"
    assert default_pattern("encoder-decoder", "qa", {"objective": "span", "pattern": "causal"}) == "causal"


def test_a_text_to_text_model_generates_with_the_generation_tools(tmp_path):
    from triform.generate import TextGenerator

    init = pretrained(tmp_path / "body", "stack", extra={"objective": "clm", "pattern": "causal"})
    data = write(tmp_path / "data.jsonl", text2text_rows(40, seed=1))
    assert finetune("text2text", init, data, None, tmp_path / "run", 4, "--pattern", "prefix") == 0
    generator = TextGenerator.load(tmp_path / "run" / "model")
    assert (generator.recipe.objective, generator.recipe.pattern) == ("seq2seq", "prefix")
    assert isinstance(generator.generate("f1 k2 f3", max_new_tokens=3).text, str)


def test_the_python_example_of_the_readme(tmp_path):
    from triform.tasks import Framing, make_task, read_records
    from triform.tasks.checkpoint import load_body

    init = pretrained(tmp_path / "bert", extra={"objective": "mlm", "pattern": "bidirectional"})
    write(tmp_path / "train.jsonl", qa_rows(40, seed=1))
    body, specials, tokenizer, extra = load_body(init)
    task = make_task("qa", Framing("stack", "bidirectional", specials, max_len=48), tokenizer, stride=8)
    records = read_records(tmp_path / "train.jsonl", task.inputs + task.targets)
    task.fit(records)
    model = task.build_model(body)
    batch = task.collate(task.encode_all(records[:32], with_targets=True))
    loss = task.loss(model(**batch.model_inputs()), batch)
    loss.backward()
    predictions = task.predict(model, records[:5])
    assert task.no_answer and len(predictions) == 5 and set(predictions[0]) == {"answer", "answer_start", "score"}


def test_two_processes_fine_tune_as_one(tmp_path):
    """Under torchrun (DDP, gloo), each process takes whole features of the global batch; without
    dropout the losses and the weights are those of one process."""
    init = pretrained(tmp_path / "bert", dropout=0.0)
    train = write(tmp_path / "train.jsonl", pair_rows(64, seed=1))
    args = ["--train.steps", "4", "--train.batch_size", "8", "--train.eval_every", "4", *FAST]
    common = ["finetune", "--task", "pair", "--init", init, "--data.train", train, "--pair.both_orders", "true", *args]
    assert main([*common, "--run_dir", str(tmp_path / "one")]) == 0
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "triform",
        *common,
        "--run_dir",
        str(tmp_path / "two"),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    def losses(run):
        return [
            json.loads(line)["loss"]
            for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "train"
        ]

    assert losses("two") == pytest.approx(losses("one"), rel=1e-4)
    (a, _, _), (b, _, _) = load_task_model(tmp_path / "one" / "model"), load_task_model(tmp_path / "two" / "model")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def test_a_stopped_fine_tuning_resumes_as_if_never_stopped(tmp_path):
    init = pretrained(tmp_path / "bert", dropout=0.0)
    train = write(tmp_path / "train.jsonl", choice_rows(48, seed=1))
    common = ["--optim.schedule", "constant", "--optim.warmup_steps", "0", "--train.checkpoint_every", "2"]
    assert finetune("choice", init, train, None, tmp_path / "whole", 4, *common) == 0
    assert finetune("choice", init, train, None, tmp_path / "parts", 2, *common) == 0
    assert finetune("choice", init, train, None, tmp_path / "parts", 4, *common) == 1  # the folder holds a run
    assert finetune("choice", init, train, None, tmp_path / "parts", 4, *common, "--resume", "true") == 0

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if json.loads(line)["split"] == "train"]

    assert losses("parts") == pytest.approx(losses("whole"), rel=1e-5)
    (a, _, _), (b, _, _) = load_task_model(tmp_path / "whole" / "model"), load_task_model(tmp_path / "parts" / "model")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
