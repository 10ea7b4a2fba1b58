"""The shapes Hugging Face folders come in (PyTorch pickles, shards, base models, older files), and
the one-line errors for the ones that cannot be converted, with nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from hf_models import single_thread, tiny, transformers  # noqa: F401
from safetensors.torch import load_file, save_file

from triform.convert import ConversionError, ConversionWarning, convert_from_hf, import_hf
from triform.models import StackInputs

IDS = torch.tensor([[5, 17, 33, 41, 8, 77, 23], [12, 90, 31, 44, 45, 46, 47]])


def save(family: str, folder, **options):
    model = tiny(family)
    model.save_pretrained(folder, **options)
    return model


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def edit_weights(folder, edit):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@torch.no_grad()
def causal_logits_match(reference, folder):
    torch.testing.assert_close(import_hf(folder).model(IDS), reference(input_ids=IDS).logits, atol=1e-4, rtol=0)


def test_pytorch_pickle_is_read_with_weights_only(tmp_path):
    reference = save("gpt2", tmp_path)
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    causal_logits_match(reference, tmp_path)


def test_sharded_checkpoint(tmp_path):
    reference = save("gpt2", tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    causal_logits_match(reference, tmp_path)


def test_half_precision_weights_load_into_float32(tmp_path):
    tiny("gpt2").to(torch.bfloat16).save_pretrained(tmp_path)
    pretrained = import_hf(tmp_path)
    assert next(pretrained.model.parameters()).dtype == torch.float32
    causal_logits_match(transformers.GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.float32).eval(), tmp_path)


def test_base_model_without_head_gives_hidden_states_and_exports_as_base_model(tmp_path):
    from hf_models import perturb

    body = perturb(transformers.BertModel(tiny("bert").config), seed=1)  # with a pooler triform has no use for
    body.save_pretrained(tmp_path / "hf")
    with pytest.warns(ConversionWarning, match=r"2 tensor\(s\) have no place .*pooler\.dense"):
        pretrained = import_hf(tmp_path / "hf")
    assert not pretrained.config.output_transform
    with torch.no_grad():
        torch.testing.assert_close(
            pretrained.model.hidden_states(StackInputs(IDS, "bidirectional")),
            body(input_ids=IDS).last_hidden_state,
            atol=1e-4,
            rtol=0,
        )
    from triform.convert import export_hf

    export_hf(pretrained, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertModel"]


def test_legacy_layer_norm_names(tmp_path):
    reference = save("bert", tmp_path)
    edit_weights(
        tmp_path,
        lambda t: t.update(
            {
                k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): t.pop(k)
                for k in list(t)
                if "LayerNorm" in k
            }
        ),
    )
    with torch.no_grad():
        ours = import_hf(tmp_path).model(IDS, "bidirectional")
        torch.testing.assert_close(ours, reference(input_ids=IDS).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", [False, True])
def test_t5_untied_head_as_older_transformers_saved_it(tmp_path, scale):
    """transformers 4 wrote T5 v1.1 with tie_word_embeddings = false and the embeddings repeated;
    an untied head that is still rescaled (tie_word_embeddings = true) folds the scale into it."""
    reference = save("t5-v1.1", tmp_path)
    edit_config(tmp_path, tie_word_embeddings=scale, scale_decoder_outputs=None)
    edit_weights(
        tmp_path,
        lambda t: t.update(
            {
                "encoder.embed_tokens.weight": t["shared.weight"].clone(),
                "decoder.embed_tokens.weight": t["shared.weight"].clone(),
            }
        ),
    )
    reference.config.scale_decoder_outputs = scale
    pretrained = import_hf(tmp_path)
    assert not pretrained.config.tie_embeddings and not pretrained.config.scale_output
    decoder_ids = IDS[:, :4]
    with torch.no_grad():
        expected = reference(input_ids=IDS, decoder_input_ids=decoder_ids).logits
        torch.testing.assert_close(pretrained.model(IDS, decoder_ids), expected, atol=1e-4, rtol=0)


# -- errors: one line naming the field or tensor, nothing written ------------------------------


def refused(source, out, match):
    with pytest.raises(ConversionError, match=match) as caught:
        convert_from_hf(source, out)
    assert "\n" not in str(caught.value)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    return str(caught.value)


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "work").mkdir()
    return tmp_path / "hf", tmp_path / "work" / "out"


def test_unknown_model_type(folders):
    source, out = folders
    save("bert", source)
    edit_config(source, model_type="xlnet")
    refused(source, out, r"config\.json: model_type 'xlnet' is not supported; supported: bart, bert, ")


def test_missing_tensor(folders):
    source, out = folders
    save("bert", source)
    edit_weights(source, lambda t: t.pop("bert.encoder.layer.1.output.dense.weight"))
    refused(source, out, r"model\.safetensors: tensor 'bert\.encoder\.layer\.1\.output\.dense\.weight' is missing")


def test_shape_mismatch(folders):
    source, out = folders
    save("gpt2", source)
    edit_config(source, n_inner=64)
    refused(
        source,
        out,
        r"tensor 'transformer\.h\.0\.mlp\.c_fc\.weight' has shape \[32, 128\]; "
        r"config\.json describes \[32, 64\]",
    )


@pytest.mark.parametrize(
    "name, message",
    [("model.safetensors", "unreadable safetensors file"), ("pytorch_model.bin", "unreadable PyTorch weights file")],
)
def test_truncated_weights(folders, name, message):
    source, out = folders
    save("t5", source)
    if name == "pytorch_model.bin":
        torch.save(load_file(source / "model.safetensors"), source / name)
        (source / "model.safetensors").unlink()
    path = source / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(source, out, rf"{name}: {message}")


def test_bad_config_json_names_the_line(folders):
    source, out = folders
    save("bart", source)
    (source / "config.json").write_text('{\n  "model_type": "bart",\n  "d_model": ,\n}')
    refused(source, out, r"config\.json: line 3: invalid JSON")


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(hidden_size=None), r"field 'hidden_size' is missing"),
        (dict(hidden_act="mish"), r"field 'hidden_act': activation 'mish' has no triform equivalent"),
        (
            dict(position_embedding_type="relative_key"),
            r"'position_embedding_type': value 'relative_key' is not supported",
        ),
        (dict(num_attention_heads="4"), r"field 'num_attention_heads': expected int, got '4'"),
    ],
)
def test_config_fields_triform_cannot_reproduce(folders, changes, match):
    source, out = folders
    save("bert", source)
    edit_config(source, **changes)
    refused(source, out, match)


def test_differing_encoder_and_decoder_settings_are_refused(folders):
    source, out = folders
    save("bart", source)
    edit_config(source, decoder_ffn_dim=64)
    refused(source, out, r"field 'decoder_ffn_dim': 64 differs from encoder_ffn_dim = 48")


def test_embedding_copies_must_be_copies(folders):
    source, out = folders
    save("t5", source)
    edit_weights(source, lambda t: t.update({"decoder.embed_tokens.weight": t["shared.weight"] + 1}))
    refused(source, out, r"tensor 'decoder\.embed_tokens\.weight' differs from 'shared\.weight'")


def test_no_weights_and_triform_folders(folders):
    source, out = folders
    save("gpt2", source)
    (source / "model.safetensors").unlink()
    refused(source, out, r"no weights; expected model\.safetensors")
    (source / "config.json").write_text(json.dumps({"format": "triform", "model": {}}))
    refused(source, out, r"this is a triform model folder, not a Hugging Face one")


def test_existing_output_is_kept_unless_overwrite(folders):
    source, out = folders
    save("gpt2", source)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists; pass overwrite"):
        convert_from_hf(source, out)
    assert (out / "keep.txt").read_text() == "mine"
    convert_from_hf(source, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(ConversionError, match="must differ from the input folder"):
        convert_from_hf(source, source, overwrite=True)
