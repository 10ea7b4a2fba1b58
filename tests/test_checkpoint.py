import json

import pytest
import torch
from conftest import SPECIALS, random_ids, tiny_config

from triform.checkpoint import load_model, save_model
from triform.errors import TriformError
from triform.explain import word_tokenizer
from triform.models import build_model


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_round_trip_gives_the_same_logits(tmp_path, arch):
    model = build_model(tiny_config(arch, position="relative", tie_embeddings=True)).eval()
    tokenizer = word_tokenizer("hello world")
    save_model(model, tmp_path / "m", specials=SPECIALS, tokenizer=tokenizer, extra={"objective": "span"})
    loaded = load_model(tmp_path / "m")
    ids = random_ids(2, 7)
    inputs = (ids,) if arch == "stack" else (ids, ids[:, :4])
    torch.testing.assert_close(loaded.model(*inputs), model(*inputs), atol=0, rtol=0)
    assert loaded.specials == SPECIALS and loaded.extra == {"objective": "span"}
    assert loaded.tokenizer.encode("hello world").ids == tokenizer.encode("hello world").ids
    # The tied projection is stored once and still tied after loading.
    assert (
        loaded.model.head.projection.weight is loaded.model.stack.embeddings.token.weight if arch == "stack" else True
    )


def test_overwrite_is_atomic_and_leaves_no_staging_folders(tmp_path):
    model = build_model(tiny_config())
    save_model(model, tmp_path / "m")
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    save_model(build_model(tiny_config()), tmp_path / "m")
    tensors = load_file(tmp_path / "m" / "model.safetensors")
    del tensors["stack.blocks.1.feedforward.up.weight"]
    save_file(tensors, tmp_path / "m" / "model.safetensors")
    with pytest.raises(TriformError, match="tensor 'stack.blocks.1.feedforward.up.weight' is missing"):
        load_model(tmp_path / "m")


def test_shape_mismatch_is_named(tmp_path):
    save_model(build_model(tiny_config()), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model"]["d_ff"] = 128
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(TriformError, match=r"tensor 'stack.blocks.0.feedforward.up.weight' has shape \[64, 32\]"):
        load_model(tmp_path / "m")


def test_truncated_weights_and_bad_json_are_clear_errors(tmp_path):
    save_model(build_model(tiny_config()), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(TriformError, match="unreadable safetensors file"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"format": "triform",\n "model": }')
    with pytest.raises(TriformError, match="config.json: line 2: invalid JSON"):
        load_model(tmp_path / "m")


def test_unknown_config_field_is_named(tmp_path):
    save_model(build_model(tiny_config()), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model"]["n_embd"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(TriformError, match="unknown model field 'n_embd'"):
        load_model(tmp_path / "m")
