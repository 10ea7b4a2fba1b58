"""What every Hugging Face family module provides, and the parts they share.

A family reads a Hugging Face config into a ModelConfig (refusing, by field name, what triform
cannot reproduce), lists the tensor rules between the two layouts, says which ModelConfig values it
can express on export, and writes a Hugging Face config back.
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch
from torch import Tensor

from triform.config import ModelConfig
from triform.convert.files import ConversionError
from triform.convert.hf_config import HFConfig
from triform.convert.mapping import Rule

# Old TensorFlow-era checkpoints name LayerNorm parameters gamma and beta.
LEGACY_SUFFIXES = ((".gamma", ".weight"), (".beta", ".bias"))


class Family:
    model_types: ClassVar[tuple[str, ...]]
    objective: ClassVar[str]  # what the family's checkpoints were pretrained with: the imported recipe
    prefix: ClassVar[str] = ""  # the base model's prefix in checkpoints of the class with the LM head
    ignored: ClassVar[tuple[str, ...]] = ()  # patterns of tensors that carry nothing: buffers, tied copies
    copies: ClassVar[dict[str, str]] = {}  # tensors saved as copies of another, which they must equal
    decoder_start_role: ClassVar[str | None] = None  # the decoder's first token when config.json names none
    needs_tokens: ClassVar[tuple[str, ...]] = ()  # special-token roles config.json must have ids for
    free_head_size: ClassVar[bool] = False  # whether d_head may differ from d_model / n_heads (T5's d_kv)
    # Whether the family has fewer key/value heads than query heads, q/k norms, q/k/v biases of their own
    # (the Llama family's); the others have none of these.
    grouped_query: ClassVar[bool] = False
    query_key_norms: ClassVar[bool] = False
    own_qkv_bias: ClassVar[bool] = False
    fixed: ClassVar[dict[str, object]] = {}  # ModelConfig values every model of the family has
    # special-token role -> token string, per model type (the tokenizer gives the ids)
    special_tokens: ClassVar[dict[str, dict[str, str]]] = {}

    # -- import --------------------------------------------------------------------------------
    def canonical_names(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Names as the LM-head class saves them: a base model's checkpoint gets the prefix."""
        renamed = {}
        for name, tensor in tensors.items():
            for old, new in LEGACY_SUFFIXES:
                if name.endswith(old) and "LayerNorm" in name:
                    name = name[: -len(old)] + new
            renamed[name] = tensor
        if self.prefix and not any(name.startswith(self.prefix) for name in renamed):
            renamed = {self.prefix + name: tensor for name, tensor in renamed.items()}
        return renamed

    def read_config(self, hf: HFConfig, tensors: dict[str, Tensor]) -> ModelConfig:
        raise NotImplementedError

    def rules(self, config: ModelConfig, hf: dict) -> list[Rule]:
        raise NotImplementedError

    def is_ignored(self, name: str) -> bool:
        return any(re.search(pattern, name) for pattern in self.ignored)

    # -- export --------------------------------------------------------------------------------
    def problems(self, config: ModelConfig, model_type: str) -> list[str]:
        """What in `config` this family cannot express; empty when it can express all of it."""
        found = [
            f"model.{name} = {getattr(config, name)!r} (Hugging Face {model_type} needs {value!r})"
            for name, value in self.fixed.items()
            if getattr(config, name) != value
        ]
        if not self.free_head_size and config.head_dim * config.n_heads != config.d_model:
            found.append(f"model.d_head = {config.d_head} (Hugging Face {model_type} needs d_model / n_heads)")
        if not self.grouped_query and config.kv_heads != config.n_heads:
            found.append(f"model.n_kv_heads = {config.n_kv_heads} (Hugging Face {model_type} has one per query head)")
        if not self.query_key_norms and config.qk_norm:
            found.append(f"model.qk_norm = True (Hugging Face {model_type} has no q/k norms)")
        if not self.own_qkv_bias and config.attention_bias != config.bias:
            found.append(f"model.qkv_bias = {config.qkv_bias} (Hugging Face {model_type} has one bias setting)")
        return found

    def write_config(self, config: ModelConfig, model_type: str, token_ids: dict, base: dict) -> dict:
        raise NotImplementedError

    def complete_export(self, config: ModelConfig, tensors: dict[str, Tensor]) -> None:
        """Add what Hugging Face needs beyond the rules (a family may override)."""


def tied(tensors: dict[str, Tensor], copy: str, original: str) -> bool:
    """Whether an output projection is tied: absent from the file, or an exact copy of the embedding."""
    if copy not in tensors:
        return True
    return original in tensors and torch.equal(tensors[copy], tensors[original])


def check_copies(tensors: dict[str, Tensor], copies: dict[str, str], source: str) -> None:
    """Tensors that Hugging Face saves as copies of another must be copies: triform holds one."""
    for name, original in copies.items():
        if name in tensors and original in tensors and not torch.equal(tensors[name], tensors[original]):
            raise ConversionError(f"{source}: tensor {name!r} differs from {original!r}; triform shares one table")
