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


@pytest.mark.parametrize("bias", [False, True])
def test_a_folder_in_the_old_gated_layout_loads_with_gate_and_up_joined(tmp_path, bias):
    """Gated feed-forwards once stored `gate` and `up` as two tensors; now one `gate_up` (gate rows
    first). A folder written before, and an old state dict, give the same logits as the model did."""
    from safetensors.torch import load_file, save_file

    model = build_model(tiny_config(activation="silu", gated=True, bias=bias, norm="rmsnorm")).eval()
    save_model(model, tmp_path / "m")
    tensors = load_file(tmp_path / "m" / "model.safetensors")
    old = {}
    for name, tensor in tensors.items():
        if ".gate_up." in name:  # back to the old layout: two tensors of d_ff rows each
            gate, up = tensor.chunk(2)
            old[name.replace("gate_up", "gate")], old[name.replace("gate_up", "up")] = gate.clone(), up.clone()
        else:
            old[name] = tensor
    assert "stack.blocks.0.feedforward.gate.weight" in old and not any("gate_up" in n for n in old)
    save_file(old, tmp_path / "m" / "model.safetensors")
    ids = random_ids(2, 7)
    torch.testing.assert_close(load_model(tmp_path / "m").model(ids), model(ids), atol=0, rtol=0)
    fresh = build_model(tiny_config(activation="silu", gated=True, bias=bias, norm="rmsnorm")).eval()
    fresh.load_state_dict({**old, **{n: t for n, t in model.state_dict().items() if n not in tensors}})
    torch.testing.assert_close(fresh(ids), model(ids), atol=0, rtol=0)


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


def test_a_run_folder_stands_for_its_final_model_else_its_best_else_its_newest_checkpoint(tmp_path):
    from triform.checkpoint import model_folder

    run = tmp_path / "run"
    for folder in ("checkpoints/step-0000002", "checkpoints/step-0000010", "best", "model"):
        (run / folder).mkdir(parents=True)
    assert model_folder(run) == run  # nothing marks a model yet: reading it says config.json is missing
    for folder, then in [
        ("checkpoints/step-0000002", "checkpoints/step-0000002"),
        ("checkpoints/step-0000010", "checkpoints/step-0000010"),
        ("best", "best"),
        ("model", "model"),
    ]:
        (run / folder / "config.json").write_text("{}")
        assert model_folder(run) == run / then
        assert model_folder(run / then) == run / then  # a model folder is itself
    adapters = tmp_path / "lora-run" / "model"
    adapters.mkdir(parents=True)
    (adapters / "adapter.json").write_text("{}")
    assert model_folder(adapters.parent) == adapters.parent
    assert model_folder(adapters.parent, ("config.json", "adapter.json")) == adapters
