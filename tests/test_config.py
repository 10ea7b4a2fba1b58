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
