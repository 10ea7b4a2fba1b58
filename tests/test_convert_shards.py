"""Weights above a size are exported in shards, as transformers writes them, and come back whole:
transformers loads the shards, triform imports them, and both give the original logits."""

from __future__ import annotations

import json

import pytest
import torch
from hf_models import single_thread, tiny, transformers  # noqa: F401

from triform.cli import main
from triform.convert import ConversionError, export_hf, import_hf
from triform.convert.files import parse_size, shards

IDS = torch.tensor([[0, 9, 17, 33, 41, 8, 77], [0, 12, 5, 90, 31, 4, 4]])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama") / "hf"
    reference = tiny("llama")
    reference.save_pretrained(folder)
    return reference, import_hf(folder, tokenizer=False)


@torch.no_grad()
def test_a_model_above_the_shard_size_is_sharded_and_loads_whole(imported, tmp_path):
    reference, pretrained = imported
    export_hf(pretrained, tmp_path / "out", max_shard_size="20KB")
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (tmp_path / "out" / "model.safetensors").exists()
    from safetensors import safe_open

    total = 0
    for name in files:
        with safe_open(str(tmp_path / "out" / name), "pt") as shard:
            sizes = [shard.get_tensor(key).numel() * 4 for key in shard.keys()]
            assert sum(sizes) <= 20_000 or len(sizes) == 1  # only a tensor larger than a shard stands alone
            assert {key: name for key in shard.keys()}.items() <= index["weight_map"].items()
            total += sum(sizes)
    assert index["metadata"]["total_size"] == total

    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(loaded(input_ids=IDS).logits, reference(input_ids=IDS).logits, atol=1e-5, rtol=0)
    again = import_hf(tmp_path / "out", tokenizer=False)
    assert again.config == pretrained.config
    torch.testing.assert_close(again.model(IDS, "causal"), pretrained.model(IDS, "causal"), atol=0, rtol=0)


def test_below_the_shard_size_one_file_is_written(imported, tmp_path):
    export_hf(imported[1], tmp_path / "out")  # 5GB by default
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()


def test_shards_follow_the_order_and_a_large_tensor_stands_alone():
    tensors = {"a": torch.zeros(3), "b": torch.zeros(3), "big": torch.zeros(10), "c": torch.zeros(2)}
    assert [list(group) for group in shards(tensors, 24)] == [["a", "b"], ["big"], ["c"]]
    assert (parse_size("5GB"), parse_size("2GiB"), parse_size("500kb"), parse_size(77)) == (5e9, 2**31, 5e5, 77)


def test_the_command_shards_and_a_bad_size_is_named_before_anything_is_written(imported, tmp_path, capsys):
    from triform.checkpoint import save_model

    _, pretrained = imported
    save_model(pretrained.model, tmp_path / "tri", specials=pretrained.specials, extra=pretrained.extra)
    argv = ["convert", "--to-hf", str(tmp_path / "tri"), "--out", str(tmp_path / "hf")]
    assert main([*argv, "--max-shard-size", "five gigabytes"]) == 1
    assert "--max-shard-size: expected a size such as 5GB" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
    assert main([*argv, "--max-shard-size", "30KB"]) == 0
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    with pytest.raises(ConversionError, match="expected a positive size"):
        parse_size("0MB")
