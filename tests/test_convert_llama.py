"""The Llama family beyond the parity matrix: rotary scaling at real sizes, the old and the new way
config.json writes it, what is refused and why, sliding windows, and the tokenizers these models
ship (byte-level BPE as Qwen2's, SentencePiece converted as Llama's)."""

from __future__ import annotations

import io
import json
import warnings

import pytest
import torch
from hf_models import single_thread, tiny, transformers  # noqa: F401
from hf_tokenizers import byte_level_folder, corpus, varied_strings
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from triform.convert import ConversionError, ConversionWarning, export_hf, import_hf
from triform.nn.position import Rotary, RotaryScaling

ROPES = {
    "linear": dict(rope_type="linear", factor=4.0),
    "llama3": dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    ),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32768),
}


@pytest.mark.parametrize("kind", ROPES)
def test_rotary_scaling_gives_the_frequencies_of_transformers_at_real_sizes(kind):
    """Llama 3.1's head size (128) and base (500000): every branch of each rule is taken."""
    parameters = {**ROPES[kind], "rope_theta": 500000.0}
    config = transformers.LlamaConfig(
        hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072, rope_parameters=parameters
    )
    theirs, their_factor = ROPE_INIT_FUNCTIONS[kind](config, "cpu")
    inverse = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128))
    scaling = RotaryScaling(kind, parameters["factor"], parameters.get("original_max_position_embeddings"))
    ours, our_factor = scaling.apply(inverse, 128, 500000.0)
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-5, atol=0)
    assert our_factor == pytest.approx(their_factor)
    assert not torch.allclose(ours, inverse)  # the scaling changed something
    rotary = Rotary(128, 64, 500000.0, scaling)
    assert rotary.cos[0, 0] == pytest.approx(our_factor)  # YaRN's temperature scales cos and sin


def save(model, folder, **config_changes):
    model.save_pretrained(folder)
    path = folder / "config.json"
    values = json.loads(path.read_text())
    for key, value in config_changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    path.write_text(json.dumps(values))
    return folder


def test_the_old_rope_scaling_and_rope_theta_fields_read_as_rope_parameters(tmp_path):
    reference = tiny("llama")
    new = import_hf(save(reference, tmp_path / "new"), tokenizer=False).config
    parameters = dict(reference.config.rope_parameters)
    theta = parameters.pop("rope_theta")
    parameters["type"] = parameters.pop("rope_type")  # the oldest spelling
    old = import_hf(
        save(reference, tmp_path / "old", rope_parameters=None, rope_scaling=parameters, rope_theta=theta),
        tokenizer=False,
    ).config
    assert old == new and new.rotary_scaling == "llama3" and new.rotary_base == 500000.0


@pytest.mark.parametrize(
    "family, changes, message",
    [
        ("llama", dict(rope_parameters=dict(rope_type="dynamic", factor=2.0)), "RoPE type 'dynamic' is not supported"),
        ("llama", dict(rope_parameters=dict(rope_type="longrope")), "RoPE type 'longrope' is not supported"),
        ("llama", dict(partial_rotary_factor=0.5), "partial_rotary_factor 0.5 is not supported"),
        (
            "qwen2",
            dict(rope_parameters=dict(rope_type="yarn", factor=4.0, mscale=0.7, original_max_position_embeddings=16)),
            "YaRN's mscale 0.7 is not supported",
        ),
        ("llama", dict(attention_bias=True, mlp_bias=False), "field 'mlp_bias': False with attention_bias True"),
        ("qwen3", dict(attention_bias=True), "field 'attention_bias': value True is not supported"),
    ],
)
def test_what_triform_cannot_reproduce_is_refused_by_field(tmp_path, family, changes, message):
    with pytest.raises(ConversionError, match=message) as caught:
        import_hf(save(tiny(family), tmp_path / "hf", **changes), tokenizer=False)
    assert "config.json: field" in str(caught.value) and "\n" not in str(caught.value)


def test_a_sliding_window_holds_max_len_and_the_export_keeps_the_original(tmp_path):
    folder = save(tiny("mistral"), tmp_path / "hf")
    with pytest.warns(ConversionWarning, match="sliding window of 32 tokens.*max_len is 32"):
        pretrained = import_hf(folder, tokenizer=False)
    assert pretrained.config.max_len == 32
    with pytest.raises(ValueError, match="beyond the model's max_len 32"):
        pretrained.model(torch.arange(33)[None] % 100, "causal")
    export_hf(pretrained, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (written["max_position_embeddings"], written["sliding_window"]) == (64, 32)
    # A window as long as the context changes nothing: no warning, the whole context.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)
        assert (
            import_hf(save(tiny("mistral"), tmp_path / "wide", sliding_window=64), tokenizer=False).config.max_len == 64
        )


def test_the_kv_cache_of_an_imported_model_holds_its_key_value_heads(tmp_path):
    pretrained = import_hf(save(tiny("llama"), tmp_path / "hf"), tokenizer=False)
    cache = pretrained.model.new_cache(1)
    assert cache[0].keys.shape[1] == pretrained.config.n_kv_heads == 2 and pretrained.config.n_heads == 4


# -- tokenizers --------------------------------------------------------------------------------------


def sentencepiece_bpe(folder):
    """A Llama tokenizer as transformers converts it from a SentencePiece BPE model with byte fallback."""
    import sentencepiece

    folder.mkdir(parents=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=500,
        byte_fallback=True,
        hard_vocab_limit=False,
        minloglevel=2,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    return transformers.AutoTokenizer.from_pretrained(folder)


def byte_level_bpe(folder):
    """Qwen2's tokenizer class over a byte-level BPE vocabulary trained here."""
    byte_level_folder(folder, "gpt2", {"tokenizer_class": "Qwen2Tokenizer"})
    return transformers.AutoTokenizer.from_pretrained(folder)


TOKENIZERS = {"llama": (sentencepiece_bpe, ("<s>", "</s>", "<unk>")), "qwen2": (byte_level_bpe, ("<|endoftext|>",))}


@pytest.mark.parametrize("family", TOKENIZERS)
def test_the_tokenizers_these_families_ship_give_transformers_ids(tmp_path, family):
    pytest.importorskip("sentencepiece")
    build, specials = TOKENIZERS[family]
    reference_tokenizer = build(tmp_path / "vocabulary")
    folder = tmp_path / "hf"
    reference_tokenizer.save_pretrained(folder)
    model = tiny(family)
    model.resize_token_embeddings(len(reference_tokenizer))
    model.save_pretrained(folder)
    pretrained = import_hf(folder)
    strings = varied_strings(specials, n=200)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    expected = [theirs(text, add_special_tokens=False)["input_ids"] for text in strings]
    assert [pretrained.tokenizer.encode(text, add_special_tokens=False).ids for text in strings] == expected
    if family == "llama":
        assert (pretrained.specials.bos, pretrained.specials.eos) == (1, 2)
    else:
        assert pretrained.specials.bos == pretrained.specials.eos == theirs.convert_tokens_to_ids("<|endoftext|>")
    export_hf(pretrained, tmp_path / "out")
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert [again(text, add_special_tokens=False)["input_ids"] for text in strings] == expected


def test_a_sentencepiece_model_alone_is_named_as_not_converted(tmp_path):
    folder = save(tiny("llama"), tmp_path / "hf")
    (folder / "tokenizer.model").write_bytes(b"\x00")
    with pytest.warns(ConversionWarning, match="tokenizer.model: a SentencePiece model without tokenizer.json"):
        assert import_hf(folder).tokenizer is None
