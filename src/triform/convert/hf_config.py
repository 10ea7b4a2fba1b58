"""Reading the fields of a Hugging Face `config.json`, with errors that name the field.

This is the only place, with the family modules next to it, where Hugging Face's names
(`hidden_size`, `n_embd`, `d_kv`, ...) meet triform's (`d_model`, `n_heads`, `d_head`, ...).
"""

from __future__ import annotations

from triform.convert.files import ConversionError

# Hugging Face activation names -> triform's. gelu_new and gelu_pytorch_tanh are the tanh
# approximation of GELU (Hendrycks & Gimpel 2016) that GPT-2 and T5 v1.1 use; swish is silu.
ACTIVATIONS = {
    "gelu": "gelu",
    "relu": "relu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
}
ACTIVATION_NAMES = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new", "silu": "silu"}

_REQUIRED = object()


class HFConfig:
    """A Hugging Face config.json: typed reads of its fields, each error naming the file and field."""

    def __init__(self, values: dict, source: str):
        self.values = values
        self.source = source
        self.model_type: str = values["model_type"]

    def __contains__(self, name: str) -> bool:
        return self.values.get(name) is not None

    def error(self, name: str, message: str) -> ConversionError:
        return ConversionError(f"{self.source}: field {name!r}: {message}")

    def get(self, name: str, kind: type = int, default=_REQUIRED):
        value = self.values.get(name)
        if value is None:
            if default is _REQUIRED:
                raise ConversionError(f"{self.source}: field {name!r} is missing; {self.model_type} needs it")
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, f"expected {kind.__name__}, got {value!r}")
        if kind is int and value < 0:
            raise self.error(name, f"expected a non-negative integer, got {value}")
        return value

    def activation(self, name: str, default=_REQUIRED) -> str:
        value = self.get(name, str, default)
        if value not in ACTIVATIONS:
            raise self.error(name, f"activation {value!r} has no triform equivalent; supported: {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[value]

    def require(self, name: str, allowed, default=None) -> None:
        """Refuse a setting triform cannot reproduce, naming it."""
        value = self.values.get(name, default)
        if value not in allowed:
            raise self.error(name, f"value {value!r} is not supported (supported: {list(allowed)})")

    def same(self, first: str, second: str, kind: type = int):
        """Two fields that triform keeps as one (encoder and decoder heads, ...) must agree."""
        a, b = self.get(first, kind), self.get(second, kind)
        if a != b:
            raise self.error(second, f"{b} differs from {first} = {a}; triform uses one value for both stacks")
        return a


def hf_activation(activation: str, original: str | None = None) -> str:
    """triform's activation as a Hugging Face name, keeping the original spelling when it means the same."""
    if original is not None and ACTIVATIONS.get(original) == activation:
        return original
    return ACTIVATION_NAMES[activation]
