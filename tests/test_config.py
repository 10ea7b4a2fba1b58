import pytest

from triform.config import ModelConfig
from triform.errors import ConfigError


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(position="absolute"), "model.position: expected one of"),
        (dict(n_layers="2"), "model.n_layers: expected int, got '2'"),
        (dict(d_model=65), "not divisible by n_heads"),
        (dict(dropout=1.0), "model.dropout: expected a probability"),
        (dict(gated=1), "model.gated: expected bool"),
        (dict(position="rotary", d_model=12, n_heads=4), "rotary needs an even head size"),
        (dict(tie_embeddings=False, scale_output=True), "model.scale_output"),
        (dict(rotary_scaling="ntk"), "model.rotary_scaling: expected one of"),
        (dict(rotary_scaling="yarn"), "model.rotary_scaling: 'yarn' needs model.position = 'rotary'"),
        (
            dict(position="rotary", rotary_scaling="linear", rotary_factor=0.5),
            "model.rotary_factor: expected 1 or more",
        ),
        (dict(position="rotary", rotary_scaling="llama3", rotary_factor=8.0), "model.rotary_original_max_len"),
        (
            dict(
                position="rotary", rotary_scaling="llama3", rotary_original_max_len=64, rotary_low_frequency_factor=5.0
            ),
            "model.rotary_low_frequency_factor: expected 0 < rotary_low_frequency_factor < rotary_high",
        ),
    ],
)
def test_bad_fields_name_themselves(changes, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**changes)


def test_round_trip_through_a_dict():
    config = ModelConfig(arch="encoder-decoder", n_decoder_layers=3, position="relative")
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_unknown_field_names_the_source():
    with pytest.raises(ConfigError, match="run/config.json: unknown model field 'hidden_size'"):
        ModelConfig.from_dict({"hidden_size": 3}, source="run/config.json")
