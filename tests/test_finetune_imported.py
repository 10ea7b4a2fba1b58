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


def test_an_imported_gpt2_trains_lora_adapters_with_its_own_special_tokens(tmp_path):
    """`triform train --init` on an imported GPT-2: its tokenizer and its one <|endoftext|> for
    every role (config.json's special tokens), not triform's [EOS] names."""
    from training_helpers import write_text

    source = byte_level_folder(tmp_path / "hf", "gpt2")
    model = tiny("gpt2")
    model.resize_token_embeddings(len(transformers.AutoTokenizer.from_pretrained(source)))
    model.save_pretrained(source)
    assert main(["convert", "--from-hf", str(source), "--out", str(tmp_path / "imported")]) == 0
    corpus = write_text(tmp_path / "corpus.txt", 60)
    argv = ["train", "--init", str(tmp_path / "imported"), "--data.train", str(corpus)]
    argv += ["--run_dir", str(tmp_path / "r"), "--train.steps", "2", "--train.batch_size", "2"]
    argv += ["--train.precision", "fp32", "--lora.rank", "2"]
    assert main(argv) == 0
    document = json.loads((tmp_path / "r" / "model" / "adapter.json").read_text())
    assert document["special_tokens"]["eos"] == document["special_tokens"]["pad"]
    assert document["extra"]["recipe"]["objective"] == "clm"
    merged = tmp_path / "merged"
    assert (
        main(
            [
                "merge",
                "--model",
                str(tmp_path / "imported"),
                "--adapter",
                str(tmp_path / "r" / "model"),
                "--output",
                str(merged),
            ]
        )
        == 0
    )
    assert main(["eval", "--model", str(merged), "--data", str(corpus), "--max_examples", "4"]) == 0
