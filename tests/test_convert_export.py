"""Exporting triform's own models, the `triform convert` command, and `triform.from_pretrained`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import random_ids
from hf_models import single_thread, tiny, transformers  # noqa: F401

import triform
from triform.checkpoint import load_model, save_model
from triform.cli import main
from triform.convert import ConversionError, export_hf, infer_model_type
from triform.models import build_model
from triform.models.presets import get_preset

MARIAN_LIKE = dict(
    arch="encoder-decoder",
    position="sinusoidal-halves",
    norm_placement="post",
    activation="silu",
    scale_embeddings=True,
    output_bias=True,
)


def native(preset: str | None = None, **changes):
    config = get_preset(preset).model if preset else triform.ModelConfig()
    config = config.replace(
        vocab_size=100,
        d_model=32,
        n_heads=4,
        d_ff=48,
        n_layers=2,
        max_len=64,
        dropout=0.0,
        attention_dropout=0.0,
        **changes,
    )
    model = build_model(config).eval()
    with torch.no_grad():  # leave no parameter at its initial value (norms at 1, biases at 0)
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    specials = triform.SpecialTokens(pad=0, unk=1, bos=2, eos=3, mask=4, sep=5, cls=6)
    return triform.checkpoint.Pretrained(model, config, specials)


@pytest.mark.parametrize(
    "preset, changes, expected",
    [
        ("tiny-gpt2", {}, "gpt2"),
        ("tiny-bert", {}, "bert"),
        ("tiny-bert", dict(token_types=0, norm_eps=1e-12), "distilbert"),
        ("tiny-t5", dict(d_head=16), "t5"),
        (
            "tiny-t5",
            dict(d_head=16, gated=True, activation="gelu_tanh", tie_embeddings=False, scale_output=False),
            "t5",
        ),
        ("tiny-t5", dict(d_head=16, scale_output=False), "t5"),
        ("tiny-bart", {}, "bart"),
        (None, MARIAN_LIKE, "marian"),
        ("tiny-llama", {}, "llama"),
        ("tiny-llama", dict(n_kv_heads=None, tie_embeddings=True, bias=True), "llama"),
        ("tiny-llama", dict(rotary_scaling="yarn", rotary_factor=4.0, rotary_original_max_len=16), "llama"),
        ("tiny-llama", dict(qkv_bias=True), "qwen2"),
        ("tiny-llama", dict(qk_norm=True, d_head=16, n_kv_heads=1), "qwen3"),
    ],
)
@torch.no_grad()
def test_triform_models_export_to_the_family_that_expresses_them(tmp_path, preset, changes, expected):
    pretrained = native(preset, **changes)
    assert infer_model_type(pretrained.config) == expected
    export_hf(pretrained, tmp_path / "out")
    architecture = json.loads((tmp_path / "out" / "config.json").read_text())["architectures"][0]
    loaded = getattr(transformers, architecture).from_pretrained(tmp_path / "out").eval()  # the class the folder names
    ids = random_ids(2, 9)
    if pretrained.config.arch == "stack":
        pattern = "bidirectional" if expected in ("bert", "distilbert") else "causal"
        torch.testing.assert_close(loaded(input_ids=ids).logits, pretrained.model(ids, pattern), atol=1e-4, rtol=0)
    else:
        decoder_ids = ids[:, :5]
        torch.testing.assert_close(
            loaded(input_ids=ids, decoder_input_ids=decoder_ids).logits,
            pretrained.model(ids, decoder_ids),
            atol=1e-4,
            rtol=0,
        )


@pytest.mark.parametrize(
    "preset, changes, match",
    [
        ("tiny-vaswani", {}, r"no Hugging Face family can express this model \(gpt2: model\.arch = 'encoder-decoder'"),
        (
            "tiny-gpt2",
            dict(position="rotary"),
            r"gpt2: model\.position = 'rotary' \(Hugging Face gpt2 needs 'learned'\)",
        ),
        ("tiny-vaswani", dict(position="sinusoidal-halves", norm_eps=1e-5, gated=True), r"marian: model\.gated = True"),
    ],
)
def test_what_no_family_expresses_is_named(tmp_path, preset, changes, match):
    with pytest.raises(ConversionError, match=match) as caught:
        export_hf(native(preset, **changes), tmp_path / "out")
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "preset, changes, model_type, match",
    [
        (
            "tiny-bert",
            dict(n_kv_heads=2),
            "bert",
            r"model\.n_kv_heads = 2 \(Hugging Face bert has one per query head\)",
        ),
        ("tiny-gpt2", dict(qk_norm=True), "gpt2", r"model\.qk_norm = True"),
        ("tiny-t5", dict(d_head=16, qkv_bias=True), "t5", r"model\.qkv_bias = True \(Hugging Face t5 has one bias"),
        ("tiny-llama", dict(qkv_bias=True), "llama", r"model\.qkv_bias = True \(Hugging Face llama has biases on q"),
        ("tiny-llama", dict(qkv_bias=True), "qwen3", r"model\.qkv_bias = True \(Hugging Face qwen3"),
        ("tiny-llama", dict(bias=True), "mistral", r"model\.bias = True \(Hugging Face mistral needs False\)"),
        ("tiny-llama", {}, "qwen2", r"model\.qkv_bias = None \(Hugging Face qwen2 needs True\)"),
    ],
)
def test_what_a_named_family_cannot_hold_of_grouped_attention_is_named(tmp_path, preset, changes, model_type, match):
    with pytest.raises(ConversionError, match=match):
        export_hf(native(preset, **changes), tmp_path / "out", model_type=model_type)


def test_special_tokens_an_encoder_decoder_needs(tmp_path):
    pretrained = native("tiny-bart")
    pretrained.specials = None
    with pytest.raises(ConversionError, match="Hugging Face bart needs a pad token id, and the model has none"):
        export_hf(pretrained, tmp_path / "out")


def test_an_explicit_family_lists_every_missing_feature(tmp_path):
    with pytest.raises(
        ConversionError,
        match=r"cannot export as Hugging Face gpt2: model\.norm_placement = 'post'.*; "
        r"model\.token_types = 2",
    ):
        export_hf(native("tiny-bert"), tmp_path / "out", model_type="gpt2")


def test_cli_converts_both_ways_and_reports_errors_on_one_line(tmp_path, capsys):
    tiny("bart").save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "tri")]) == 0
    assert "imported Hugging Face bart" in capsys.readouterr().out
    assert load_model(tmp_path / "tri").extra["hf"]["model_type"] == "bart"
    assert main(["convert", "--to-hf", str(tmp_path / "tri"), "--out", str(tmp_path / "back")]) == 0
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == [
        "BartForConditionalGeneration"
    ]
    assert main(["convert", "--to-hf", str(tmp_path / "tri"), "--out", str(tmp_path / "back")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("triform convert: error: ") and "already exists" in error and error.count("\n") == 1
    assert (
        main(["convert", "--to-hf", str(tmp_path / "tri"), "--out", str(tmp_path / "x"), "--model-type", "gpt2"]) == 1
    )
    assert "cannot export as Hugging Face gpt2" in capsys.readouterr().err
    assert main(["convert", "--out", str(tmp_path / "y")]) == 1
    assert "exactly one of --from-hf" in capsys.readouterr().err


def test_from_pretrained_reads_both_kinds_of_folder_without_importing_transformers(tmp_path):
    tiny("gpt2").save_pretrained(tmp_path / "hf")
    save_model(native("tiny-gpt2").model, tmp_path / "tri")
    script = (
        "import sys, triform\n"
        f"a = triform.from_pretrained({str(tmp_path / 'hf')!r})\n"
        f"b = triform.from_pretrained({str(tmp_path / 'tri')!r})\n"
        "assert a.extra['hf']['model_type'] == 'gpt2' and 'hf' not in b.extra\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
