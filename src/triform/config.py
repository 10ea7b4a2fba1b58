"""The model configuration: the only description of which weights exist and how they connect.

Every field is read in one place, `models/build.py`. Names follow one vocabulary across code, CLI
and files (`d_model`, `n_heads`, `d_ff`, `n_layers`, `vocab_size`, `max_len`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args, get_origin, get_type_hints

from triform.errors import ConfigError

Architecture = Literal["stack", "encoder-decoder"]
# sinusoidal-halves: the same table with the sines first and the cosines after them (Marian)
PositionKind = Literal["sinusoidal", "sinusoidal-halves", "learned", "rotary", "relative"]
NormKind = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]
Activation = Literal["relu", "gelu", "gelu_tanh", "silu"]
# How rotary angles are stretched for contexts longer than the training one: position interpolation
# (Chen et al. 2023), Llama 3's per-frequency interpolation, YaRN (Peng et al. 2023).
RotaryScaling = Literal["none", "linear", "llama3", "yarn"]


@dataclass
class ModelConfig:
    """Hyper-parameters of one Transformer.

    `arch` picks one stack of blocks or an encoder + decoder; the attention pattern is not here,
    because it belongs to the objective and is chosen per batch.
    """

    arch: Architecture = "stack"
    vocab_size: int = 1024
    d_model: int = 64
    n_heads: int = 4
    # Key/value heads, each shared by n_heads / n_kv_heads query heads: grouped-query attention
    # (Ainslie et al. 2023); 1 is multi-query attention (Shazeer 2019). None: n_heads, one each.
    n_kv_heads: int | None = None
    d_head: int | None = None  # None: d_model // n_heads; T5 decouples the two
    d_ff: int = 256
    n_layers: int = 2  # the stack, or the encoder of an encoder-decoder
    n_decoder_layers: int | None = None  # None: same as n_layers
    max_len: int = 128
    position: PositionKind = "learned"
    relative_buckets: int = 32  # T5 relative position bias (Raffel et al. 2020, §2.1)
    relative_max_distance: int = 128
    rotary_base: float = 10000.0
    rotary_scaling: RotaryScaling = "none"
    rotary_factor: float = 1.0  # linear, llama3, yarn: how many times longer the context is made
    rotary_original_max_len: int | None = None  # llama3, yarn: the context length trained at
    rotary_low_frequency_factor: float = 1.0  # llama3: wavelengths above original / this are interpolated
    rotary_high_frequency_factor: float = 4.0  # llama3: wavelengths below original / this are kept
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: NormPlacement = "pre"
    activation: Activation = "gelu"
    gated: bool = False  # gated linear unit: silu + gated is SwiGLU, gelu + gated is GEGLU
    bias: bool = True  # biases in the attention and feed-forward projections
    qkv_bias: bool | None = None  # biases in the query, key and value projections; None: as bias (Qwen2: true)
    qk_norm: bool = False  # model.norm on each head's queries and keys before attending (Qwen3; Dehghani et al. 2023)
    dropout: float = 0.1
    attention_dropout: float = 0.1
    token_types: int = 0  # number of segment embeddings (BERT uses 2); 0 for none
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model), Vaswani §3.4
    embedding_norm: bool = False  # a norm right after the embeddings (BERT, BART)
    scale_attention: bool = True  # divide scores by sqrt(d_head); T5 folds it into the init
    tie_embeddings: bool = True  # the output projection reuses the token embedding matrix
    share_embeddings: bool = True  # encoder and decoder read one token embedding; false: a table each
    output_transform: bool = False  # BERT's dense + activation + norm before the output projection
    output_bias: bool = False
    scale_output: bool = False  # T5: scale hidden states by d_model ** -0.5 before a tied output

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def attention_bias(self) -> bool:
        """Whether the query, key and value projections have biases."""
        return self.qkv_bias if self.qkv_bias is not None else self.bias

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers if self.n_decoder_layers is not None else self.n_layers

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            check_field_type(f"model.{field.name}", getattr(self, field.name), _hints()[field.name])
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "n_layers", "max_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.d_head is None and self.d_model % self.n_heads:
            raise ConfigError(
                f"model.n_heads: d_model {self.d_model} is not divisible by n_heads {self.n_heads}; "
                "change one or set model.d_head"
            )
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ConfigError(
                f"model.n_kv_heads: expected a divisor of n_heads {self.n_heads} (each key/value head serves "
                f"an equal group of query heads), got {self.n_kv_heads}"
            )
        if self.position == "rotary" and self.head_dim % 2:
            raise ConfigError(f"model.position: rotary needs an even head size, got {self.head_dim}")
        self.validate_rotary_scaling()
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name}: expected a probability in [0, 1), got {getattr(self, name)}")
        if self.token_types < 0:
            raise ConfigError(f"model.token_types: expected 0 or more, got {self.token_types}")
        if self.scale_output and not self.tie_embeddings:
            raise ConfigError("model.scale_output: only meaningful with model.tie_embeddings = true")

    def validate_rotary_scaling(self) -> None:
        if self.rotary_scaling == "none":
            return
        if self.position != "rotary":
            raise ConfigError(f"model.rotary_scaling: {self.rotary_scaling!r} needs model.position = 'rotary'")
        if self.rotary_factor < 1.0:
            raise ConfigError(f"model.rotary_factor: expected 1 or more, got {self.rotary_factor}")
        if self.rotary_scaling in ("llama3", "yarn") and (self.rotary_original_max_len or 0) < 1:
            raise ConfigError(
                f"model.rotary_original_max_len: rotary_scaling {self.rotary_scaling!r} needs the context length "
                "the model was trained at"
            )
        low, high = self.rotary_low_frequency_factor, self.rotary_high_frequency_factor
        if self.rotary_scaling == "llama3" and not 0 < low < high:
            raise ConfigError(
                "model.rotary_low_frequency_factor: expected 0 < rotary_low_frequency_factor < "
                f"rotary_high_frequency_factor, got {low} and {high}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> ModelConfig:
        """Build from a plain mapping; an unknown key is an error naming `source` and the key."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown model field {unknown[0]!r}; known fields: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _hints() -> dict:
    return get_type_hints(ModelConfig)


def check_field_type(name: str, value, hint) -> None:
    """Raise ConfigError unless `value` fits the annotation `hint` (Literal, int, float, bool, str, None)."""
    options = get_args(hint) if get_origin(hint) is not None else (hint,)
    if get_origin(hint) is Literal:
        if value not in options:
            raise ConfigError(f"{name}: expected one of {list(options)}, got {value!r}")
        return
    for option in options:
        if option is type(None) and value is None:
            return
        if option is bool and isinstance(value, bool):
            return
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if option is str and isinstance(value, str):
            return
        if get_origin(option) is Literal and value in get_args(option):
            return
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{name}: expected {expected}, got {value!r}")
