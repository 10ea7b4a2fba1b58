"""A Hugging Face folder imported by `triform convert` fine-tunes and predicts like a triform one,
read as its family was pretrained (BERT bidirectionally, GPT-2 causally)."""

import json

import pytest
from hf_models import single_thread, tiny, transformers  # noqa: F401 (single_thread: an autouse fixture)
from hf_tokenizers import byte_level_folder, wordpiece_folder
from task_data import classify_rows
from test_finetune_cli import finetune, write

from triform.cli import main


@pytest.mark.parametrize(
    "family, build, pattern",
    [("bert", wordpiece_folder, "bidirectional"), ("gpt2", lambda folder: byte_level_folder(folder, "gpt2"), "causal")],
)
def test_an_imported_model_is_fine_tuned_and_predicts(tmp_path, family, build, pattern):
    source = build(tmp_path / "hf")
    model = tiny(family)
    model.resize_token_embeddings(len(transformers.AutoTokenizer.from_pretrained(source)))
    model.save_pretrained(source)
    assert main(["convert", "--from-hf", str(source), "--out", str(tmp_path / "imported")]) == 0

    train = write(tmp_path / "train.jsonl", classify_rows(64, seed=1))
    assert finetune("classify", str(tmp_path / "imported"), train, train, tmp_path / "run", 4, "--max_len", "32") == 0
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["extra"]["task"]
    assert saved["pattern"] == pattern and saved["labels"] == ["blue", "green", "red"]

    test = write(tmp_path / "test.jsonl", classify_rows(8, seed=2))
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(tmp_path / "run" / "model"), "--data", test, "--output", str(out)]) == 0
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(predictions) == 8 and {p["label"] for p in predictions} <= {"blue", "green", "red"}
