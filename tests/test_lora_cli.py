"""LoRA from the command line: `triform train --init BASE --lora.rank R` and `triform finetune
--lora.rank R` write adapter folders (and nothing of the base), `generate --adapter` reads them,
`triform merge` writes a plain model folder computing the same, and a wrong base is refused."""

from __future__ import annotations

import json

import torch
from task_data import classify_rows, one_thread, tokenizer  # noqa: F401 (one_thread: an autouse fixture)
from test_finetune_cli import finetune, pretrained, write
from training_helpers import train_args, write_text

from triform.checkpoint import load_model, unique_state_dict
from triform.cli import main
from triform.models.adapters import load_adapted
from triform.tasks.checkpoint import load_task_model


def lora_run(tmp_path, base, run, *options):
    corpus = write_text(tmp_path / "more.txt", 120, seed=3)
    args = ["train", "--init", str(base), "--run_dir", str(run), "--data.train", str(corpus), "--train.steps", "3"]
    args += ["--train.batch_size", "4", "--train.log_every", "1", "--train.precision", "fp32", "--optim.lr", "1e-2"]
    return main(args + ["--lora.rank", "4", "--lora.targets", "q,v,ffn", *options])


def test_train_with_lora_saves_adapters_that_generate_and_merge_as_base_plus_adapters(tmp_path, capsys):
    corpus = write_text(tmp_path / "corpus.txt")
    assert main(train_args(tmp_path / "base", corpus, None, 2)) == 0
    base = tmp_path / "base" / "model"
    before = {k: v.clone() for k, v in unique_state_dict(load_model(base).model).items()}
    run = tmp_path / "lora"
    assert lora_run(tmp_path, base, run, "--train.activation_checkpointing", "true") == 0
    assert "trained)" in capsys.readouterr().err  # the trained parameters are counted apart
    folder = run / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.json", "adapter.safetensors", "tokenizer.json"]
    document = json.loads((folder / "adapter.json").read_text())
    assert document["base"]["path"] == str(base) and document["lora"]["targets"] == "q,v,ffn"
    after = unique_state_dict(load_model(base).model)
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the base folder is untouched

    adapted = load_adapted(base, folder).model
    changed = [n for n, p in adapted.named_parameters() if ".lora_b." in n and p.abs().max() > 0]
    assert changed  # the adapters learned something

    assert main(["merge", "--model", str(base), "--adapter", str(folder), "--output", str(tmp_path / "merged")]) == 0
    merged = load_model(tmp_path / "merged").model
    ids = torch.randint(10, 100, (2, 12))
    torch.testing.assert_close(merged(ids, "causal"), adapted(ids, "causal"), rtol=1e-5, atol=1e-5)

    capsys.readouterr()
    prompt = ["the cat", "--max_new_tokens", "8"]
    assert main(["generate", "--model", str(base), "--adapter", str(folder), *prompt]) == 0
    with_adapter = capsys.readouterr().out
    assert main(["generate", "--model", str(tmp_path / "merged"), *prompt]) == 0
    assert capsys.readouterr().out == with_adapter

    resumed = lora_run(tmp_path, base, run, "--resume", "true", "--train.steps", "4")
    assert resumed == 0 and (run / "checkpoints" / "step-0000004" / "adapter.safetensors").is_file()


def test_adapters_on_another_base_are_refused_by_field(tmp_path, capsys):
    corpus = write_text(tmp_path / "corpus.txt")
    assert main(train_args(tmp_path / "base", corpus, None, 1)) == 0
    assert lora_run(tmp_path, tmp_path / "base" / "model", tmp_path / "lora") == 0
    assert main(train_args(tmp_path / "other", corpus, None, 1, "--model.d_ff", "96")) == 0
    capsys.readouterr()
    output = tmp_path / "merged"
    argv = ["merge", "--model", str(tmp_path / "other" / "model"), "--adapter", str(tmp_path / "lora" / "model")]
    assert main([*argv, "--output", str(output)]) == 1
    assert "adapter.json: base model.d_ff is 64, but" in capsys.readouterr().err
    assert not output.exists()


def test_lora_needs_a_model_to_adapt(tmp_path, capsys):
    corpus = write_text(tmp_path / "corpus.txt")
    assert main(train_args(tmp_path / "run", corpus, None, 1, "--lora.rank", "4")) == 1
    assert "lora.rank: adapters need a trained model to adapt" in capsys.readouterr().err


def test_finetune_with_lora_trains_adapters_and_the_head_and_predicts_and_merges(tmp_path):
    init = pretrained(tmp_path / "bert", extra={"objective": "mlm", "pattern": "bidirectional"}, dropout=0.0)
    train = write(tmp_path / "train.jsonl", classify_rows(40, seed=1))
    options = ["--lora.rank", "2", "--train.activation_checkpointing", "true"]
    assert finetune("classify", init, train, None, tmp_path / "run", 3, *options) == 0
    folder = tmp_path / "run" / "model"
    stored = sorted(json.loads((folder / "adapter.json").read_text())["adapted"])
    assert stored and all(name.startswith("body.") for name in stored)
    from safetensors import safe_open

    with safe_open(str(folder / "adapter.safetensors"), "pt") as file:
        names = list(file.keys())
    assert any(n.startswith("head.") for n in names) and all(n.startswith("head.") or ".lora_" in n for n in names)

    model, task, _ = load_task_model(folder)
    assert main(["merge", "--model", init, "--adapter", str(folder), "--output", str(tmp_path / "merged")]) == 0
    merged, _, _ = load_task_model(tmp_path / "merged")
    ids = torch.randint(10, 60, (3, 10))
    torch.testing.assert_close(merged(ids), model(ids), rtol=1e-5, atol=1e-5)


def test_a_lora_run_folder_is_its_adapters_and_given_as_a_model_says_how_to_load_it(tmp_path, capsys):
    corpus = write_text(tmp_path / "corpus.txt")
    assert main(train_args(tmp_path / "base", corpus, None, 2)) == 0
    run = tmp_path / "lora"
    assert lora_run(tmp_path, tmp_path / "base", run) == 0  # the base named by its run folder too
    base = tmp_path / "base" / "model"
    capsys.readouterr()
    prompt = ["the cat", "--max_new_tokens", "4"]
    assert main(["generate", "--model", str(base), "--adapter", str(run / "model"), *prompt]) == 0
    by_folder = capsys.readouterr().out
    assert main(["generate", "--model", str(tmp_path / "base"), "--adapter", str(run), *prompt]) == 0
    assert capsys.readouterr().out == by_folder
    for given in (run, run / "model"):
        assert main(["generate", "--model", str(given), *prompt]) == 1
        assert capsys.readouterr().err.strip() == (
            f"triform generate: error: {run / 'model'} holds LoRA adapters, not a model: give their base ({base}) "
            f"with --adapter {run / 'model'} where the command takes one, or merge them: "
            f"triform merge --model {base} --adapter {run / 'model'} --output MERGED"
        )
    assert main(["eval", "--model", str(run), "--data", str(corpus)]) == 1  # eval takes no --adapter: merge
    assert "holds LoRA adapters, not a model" in capsys.readouterr().err
