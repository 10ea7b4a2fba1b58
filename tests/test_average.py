"""Checkpoint averaging (`triform average`): the mean of the weights, exactly; a folder that loads and
generates like any other; mismatched checkpoints refused by file and field, with nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from training_helpers import train_args, write_parallel

from triform.checkpoint import WEIGHTS_FILE, load_model
from triform.cli import main
from triform.errors import TriformError
from triform.generate import GenerationConfig, TextGenerator
from triform.train.average import average_checkpoints, last_checkpoints


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny encoder-decoder trained for 4 steps, a checkpoint after each, all 4 kept."""
    root = tmp_path_factory.mktemp("average")
    data = write_parallel(root / "pairs.tsv", 60)
    argv = train_args(root / "run", data, None, 4, "--preset", "tiny-vaswani", "--model.n_layers", "1")
    argv += ["--train.checkpoint_every", "1", "--train.keep_last", "4", "--data.too_long", "skip"]
    assert main(argv) == 0
    return root / "run"


def test_the_average_of_two_checkpoints_is_their_mean_exactly(run, tmp_path):
    first, second = last_checkpoints(run, 2)
    assert main(["average", "--run", str(run), "--last", "2", "--output", str(tmp_path / "avg")]) == 0
    a, b = load_file(str(first / WEIGHTS_FILE)), load_file(str(second / WEIGHTS_FILE))
    averaged = load_file(str(tmp_path / "avg" / WEIGHTS_FILE))
    assert set(averaged) == set(a)
    changed = 0
    for name, tensor in averaged.items():
        assert tensor.dtype == a[name].dtype
        assert torch.equal(tensor, (a[name] + b[name]) / 2), name
        changed += not torch.equal(a[name], b[name])
    assert changed > 0  # the two steps really differ
    config = json.loads((tmp_path / "avg" / "config.json").read_text())
    assert config["extra"]["averaged"]["steps"] == [3, 4]
    assert config["extra"]["recipe"] == json.loads((second / "config.json").read_text())["extra"]["recipe"]
    files = sorted(p.name for p in (tmp_path / "avg").iterdir())
    assert files == ["config.json", "model.safetensors", "tokenizer.json"]


def test_the_averaged_folder_loads_generates_and_translates(run, tmp_path):
    folders = last_checkpoints(run, 4)
    out = average_checkpoints(folders, tmp_path / "avg")
    loaded = load_model(out)
    expected = load_file(str(folders[0] / WEIGHTS_FILE))
    assert sum(p.numel() for p in loaded.model.parameters()) > 0 and loaded.config.arch == "encoder-decoder"
    assert set(load_file(str(out / WEIGHTS_FILE))) == set(expected)
    generator = TextGenerator.load(out)
    (result,) = generator.generate(["The cat sat."], GenerationConfig(max_new_tokens=5))
    assert isinstance(result.text, str) and len(result.ids) <= 5
    source = tmp_path / "source.txt"
    source.write_text("The cat sat.\nA dog ran.\n")
    target = tmp_path / "target.txt"
    assert main(["translate", "--model", str(out), "--input", str(source), "--output", str(target)]) == 0
    assert len(target.read_text().splitlines()) == 2


def test_folders_named_in_a_list_average_in_any_order_to_the_same_mean(run, tmp_path):
    first, second, third = (str(folder) for folder in last_checkpoints(run, 3))
    assert main(["average", "--checkpoints", f"[{first}, {second}, {third}]", "--output", str(tmp_path / "a")]) == 0
    assert main(["average", "--checkpoints", f"[{third}, {first}, {second}]", "--output", str(tmp_path / "b")]) == 0
    a, b = load_file(str(tmp_path / "a" / WEIGHTS_FILE)), load_file(str(tmp_path / "b" / WEIGHTS_FILE))
    for name in a:  # float64 sums of three float32 tensors: rounded once, whatever the order
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0)


def test_a_run_that_kept_too_few_checkpoints_says_how_to_keep_more(run, tmp_path):
    with pytest.raises(TriformError, match=r"holds 4 checkpoint\(s\).*fewer than the 5.*--train.keep_last 5"):
        last_checkpoints(run, 5)
    assert main(["average", "--run", str(run), "--last", "5", "--output", str(tmp_path / "avg")]) == 1
    assert not (tmp_path / "avg").exists()


def copy_folder(source, target):
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


def test_a_different_model_config_is_named_by_file_and_field(run, tmp_path):
    first, second = last_checkpoints(run, 2)
    other = copy_folder(second, tmp_path / "other")
    document = json.loads((other / "config.json").read_text())
    document["model"]["d_ff"] = 128
    (other / "config.json").write_text(json.dumps(document))
    with pytest.raises(TriformError, match=r"other/config.json: model.d_ff is 128, but .*config.json has 64"):
        average_checkpoints([first, other], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_a_misshapen_or_missing_tensor_is_named_by_file_and_tensor(run, tmp_path):
    first, second = last_checkpoints(run, 2)
    other = copy_folder(second, tmp_path / "other")
    tensors = load_file(str(other / WEIGHTS_FILE))
    name = sorted(tensors)[0]
    save_file({**tensors, name: torch.zeros(3, 3)}, str(other / WEIGHTS_FILE))
    with pytest.raises(TriformError, match=rf"other/model.safetensors: tensor '{name}' has shape \[3, 3\]"):
        average_checkpoints([first, other], tmp_path / "avg")
    del tensors[name]
    save_file(tensors, str(other / WEIGHTS_FILE))
    with pytest.raises(TriformError, match=rf"other/model.safetensors: tensor '{name}' is missing"):
        average_checkpoints([first, other], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_a_different_tokenizer_is_refused_and_the_output_may_not_be_an_input(run, tmp_path):
    first, second = last_checkpoints(run, 2)
    other = copy_folder(second, tmp_path / "other")
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace('"[UNK]"', '"[unk]"'))
    with pytest.raises(TriformError, match=r"other/tokenizer.json: differs from"):
        average_checkpoints([first, other], tmp_path / "avg")
    with pytest.raises(TriformError, match=r"output: .* is one of the checkpoints averaged"):
        average_checkpoints([first, second], second)
    assert main(["average", "--output", str(tmp_path / "avg")]) == 1  # neither --run nor --checkpoints
