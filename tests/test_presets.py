"""Presets are faithful: the same parameter count as the reference implementation."""

import pytest
import torch

from triform.errors import ConfigError
from triform.models import build_model
from triform.models.presets import PRESETS, get_preset


def count(model):
    return sum(p.numel() for p in model.parameters())


def reference_models():
    transformers = pytest.importorskip("transformers")
    bart = dict(
        vocab_size=50265,
        d_model=768,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
    )
    tinyllama = dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
    )
    return {
        "gpt2-small": (transformers.GPT2LMHeadModel, transformers.GPT2Config(), 0),
        "bert-base": (transformers.BertForMaskedLM, transformers.BertConfig(), 0),
        "t5-small": (transformers.T5ForConditionalGeneration, transformers.T5Config(), 0),
        # BART keeps its output bias as a frozen buffer, which triform trains, and stores two unused
        # position rows per stack (its positions start at 2).
        "bart-base": (transformers.BartForConditionalGeneration, transformers.BartConfig(**bart), 50265 - 2 * 2 * 768),
        "tinyllama-1.1b": (transformers.LlamaForCausalLM, transformers.LlamaConfig(**tinyllama), 0),
    }


@pytest.mark.parametrize("name", ["gpt2-small", "bert-base", "t5-small", "bart-base", "tinyllama-1.1b"])
def test_parameter_count_matches_transformers(name):
    model_class, config, extra = reference_models()[name]
    with torch.device("meta"):
        ours, theirs = build_model(get_preset(name).model), model_class(config)
    assert count(ours) == count(theirs) + extra


@pytest.mark.parametrize("name, millions", [("vaswani-base", 65), ("gpt1", 117)])
def test_paper_sizes(name, millions):
    with torch.device("meta"):
        model = build_model(get_preset(name).model)
    assert abs(count(model) / 1e6 - millions) / millions < 0.05


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("tiny-")])
def test_tiny_presets_keep_the_parts_of_their_full_size_model(name):
    tiny = get_preset(name)
    full = next(p for p in PRESETS.values() if not p.name.startswith("tiny-") and p.reference == tiny.reference)
    shape = {"d_model", "n_heads", "n_kv_heads", "d_head", "d_ff", "n_layers", "vocab_size", "max_len"}
    differs = {k for k, v in tiny.model.to_dict().items() if full.model.to_dict()[k] != v}
    assert differs <= shape and tiny.objective == full.objective
    assert count(build_model(tiny.model)) < 2_000_000


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'gpt5'; known presets: vaswani-base"):
        get_preset("gpt5")
