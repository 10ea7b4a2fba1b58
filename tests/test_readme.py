"""The README's Python examples run as written, in a folder holding what they name: run folders of a
tiny GPT, a tiny draft on its tokenizer and a tiny BERT, trained here by `triform train` for a few
steps; a question-answering file; a Hugging Face folder made by the README's own script, imported and
exported to ONNX by the commands the README gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from training_helpers import TINY, write_text

from triform.cli import main

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def block(containing: str) -> str:
    """The one example that contains `containing`."""
    found = [text for text in python_blocks() if containing in text]
    assert len(found) == 1, f"{len(found)} README examples contain {containing!r}"
    return found[0]


def tiny_run(folder: Path, corpus: Path, preset: str, *extra: str) -> None:
    argv = ["train", "--preset", preset, "--run_dir", str(folder), "--data.train", str(corpus), "--train.steps", "3"]
    assert main([*argv, *TINY, "--model.max_len", "64", *extra]) == 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    corpus = write_text(root / "corpus.txt", n=300)
    tiny_run(root / "runs" / "gpt", corpus, "tiny-gpt")
    tiny_run(root / "runs" / "gpt-tiny", corpus, "tiny-gpt", "--tokenizer.path", str(root / "runs/gpt/tokenizer.json"))
    tiny_run(root / "runs" / "bert", corpus, "tiny-bert")
    records = [
        {"question": "what sat?", "context": "the cat sat on the mat", "answer": "the cat", "answer_start": 0},
        {"question": "where?", "context": "a dog ran in the park", "answer": "the park", "answer_start": 13},
    ] * 20
    (root / "train.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    pairs = [{"anchor": f"the cat {i}", "positive": f"a cat {i}"} for i in range(16)]
    scored = [
        {"text_a": "the cat", "text_b": "a cat", "score": 5.0},
        {"text_a": "the cat", "text_b": "a dog", "score": 1.0},
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    (root / "sts-dev.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in scored * 2))
    finetune = ["finetune", "--task", "embed", "--init", str(root / "runs/bert"), "--run_dir", str(root / "runs/emb")]
    finetune += ["--data.train", str(root / "pairs.jsonl"), "--data.valid", str(root / "sts-dev.jsonl")]
    assert main([*finetune, "--train.steps", "2", "--train.batch_size", "8", "--train.precision", "fp32"]) == 0
    return root


def run_example(text: str, folder: Path, monkeypatch) -> dict:
    monkeypatch.chdir(folder)
    names: dict = {"__name__": "readme_example"}
    exec(compile(text, "README.md example", "exec"), names)
    return names


def test_building_a_cross_over_and_its_loss(workspace, monkeypatch):
    names = run_example(block("make_objective("), workspace, monkeypatch)
    assert names["loss"].dim() == 0 and names["loss"].isfinite()


def test_generating_streaming_and_filling_masks(workspace, monkeypatch, capsys):
    names = run_example(block("generator.stream("), workspace, monkeypatch)
    assert capsys.readouterr().out  # the stream printed its pieces
    names = run_example(
        "from triform.generate import TextGenerator\n" + block("bert.fill_mask("), workspace, monkeypatch
    )
    candidates = names["bert"].fill_mask("the cat sat on the [MASK] .", top_k=5)
    assert len(candidates) == 1 and len(candidates[0]) == 5


def test_int8_weights_and_a_draft(workspace, monkeypatch):
    names = run_example(block("draft_k=4"), workspace, monkeypatch)
    assert 0.0 <= names["generator"].acceptance.rate <= 1.0


def test_a_task_on_a_pretrained_body(workspace, monkeypatch):
    text = block('make_task("qa"')
    names = run_example(text, workspace, monkeypatch)
    assert len(names["predictions"]) == 5 and {"answer", "answer_start", "score"} <= set(names["predictions"][0])
    assert names["loss"].isfinite()


def test_a_hugging_face_folder_made_imported_exported_and_decoded_by_onnxruntime(workspace, monkeypatch, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    run_example(block("# make_folder.py"), workspace, monkeypatch)
    names = run_example(
        block("triform.from_pretrained(").replace("path/to/hf-folder", "hf-gpt2"), workspace, monkeypatch
    )
    assert (workspace / "hf-again" / "config.json").is_file() and names["pretrained"].model is not None
    assert main(["convert", "--from-hf", "hf-gpt2", "--out", "gpt2-triform"]) == 0
    assert main(["convert", "--to-onnx", "gpt2-triform", "--out", "gpt2-onnx"]) == 0
    capsys.readouterr()
    run_example(block("ort.InferenceSession("), workspace, monkeypatch)
    decoded = capsys.readouterr().out.strip()
    monkeypatch.chdir(workspace)
    assert main(["generate", "--model", "gpt2-triform", "--precision", "fp32", "--max_new_tokens", "8", "--quiet",
                 "The quick brown"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip().endswith(decoded)


def shell_lines(model: str) -> list[str]:
    """The README's `triform ...` command lines whose --model is `model`, without comment or redirection."""
    lines = []
    for text in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in text.splitlines():
            if line.startswith("triform ") and f"--model {model} " in line:
                lines.append(re.split(r"\s+(?:#|>)\s", line)[0])
    return lines


@pytest.mark.parametrize("model", ["runs/gpt", "runs/bert"])
def test_the_command_lines_on_a_run_folder(model, workspace, monkeypatch, capsys):
    import shlex

    monkeypatch.chdir(workspace)
    (workspace / "prompts.txt").write_text("the cat\na dog\n")
    lines = shell_lines(model)
    assert len(lines) >= 2
    for line in lines:
        argv = shlex.split(line)[1:]
        assert main(argv) == 0, line
        assert capsys.readouterr().out.strip(), line


def test_embedding_with_a_fine_tuned_encoder(workspace, monkeypatch):
    names = run_example(block("Embedder.load("), workspace, monkeypatch)
    assert names["vectors"].shape == (2, 32) and names["vectors"].dtype == torch.float32


def command_lines() -> list[str]:
    """Every `triform ...` command of the README's shell examples (continuations joined, `.venv/bin/`
    and `torchrun ... -m` in front, comments, pipes and redirections after, taken off); lines with a
    `...` placeholder are left out."""
    commands = []
    for text in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():
            found = re.match(r"(?:\S*/)?(?:\.venv/bin/)?(?:torchrun .*?-m )?triform\s+(.*)", line.strip())
            if found and "..." not in found[1]:
                commands.append(re.split(r"\s(?:#|>|\||&&|&)(?:\s|$)", f"{found[1]} ")[0].strip())
    return commands


def test_every_command_line_of_the_readme_parses(capsys):
    """An option renamed or dropped shows up here, before a newcomer types it."""
    import shlex

    from triform.cli import build_parser

    parser, refused = build_parser(), []
    commands = command_lines()
    assert len(commands) > 40
    for command in commands:
        try:
            parser.parse_args(shlex.split(command))
        except SystemExit as exit:
            if exit.code:
                refused.append(f"{command}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not refused, "\n".join(refused)


def test_training_goes_on_from_a_run_folder_as_from_its_model(workspace, monkeypatch):
    import yaml

    monkeypatch.chdir(workspace)
    argv = ["train", "--init", "runs/gpt", "--data.train", "corpus.txt", "--run_dir", "runs/gpt-more"]
    assert main([*argv, "--train.steps", "2", "--train.batch_size", "4", "--train.precision", "fp32"]) == 0
    assert yaml.safe_load((workspace / "runs/gpt-more/config.yaml").read_text())["init"] == "runs/gpt/model"
