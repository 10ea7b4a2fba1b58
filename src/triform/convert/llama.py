"""Llama (Touvron et al. 2023) and the families built like it: Mistral (Jiang et al. 2023), Qwen2
(Yang et al. 2024) and Qwen3 (Yang et al. 2025).

All four are pre-norm stacks with RMSNorm, rotary positions, a SwiGLU feed-forward (Shazeer 2020),
grouped-query attention (Ainslie et al. 2023) and no dropout on the residual stream. Each differs
in one or two fields:
- biases: none in Mistral and (by default) Llama; Llama's `attention_bias` and `mlp_bias` must
  agree, since triform has one setting for the output and feed-forward projections; Qwen2 has
  biases on q, k and v alone (`qkv_bias`); Qwen3's `attention_bias` covers q, k, v and o, and only
  its default (none) fits;
- Qwen3 normalises each head's queries and keys (`qk_norm`);
- Mistral, and Qwen with `use_sliding_window`, attend within a sliding window, which triform does
  not: the imported model's max_len is the window, and within it the two attend alike.
Rotary scaling is read from `rope_parameters` (transformers 5) or `rope_scaling` and `rope_theta`
(earlier): the types default, linear, llama3 and yarn. Dynamic NTK and longrope change with the
length of the input, and are refused by name.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

from triform.config import ModelConfig
from triform.convert.family import Family, tied
from triform.convert.files import ConversionWarning
from triform.convert.hf_config import HFConfig, hf_activation
from triform.convert.mapping import Rule, fused, linear, rule

EMBEDDINGS = "model.embed_tokens.weight"
SCALINGS = {"default": "none", "linear": "linear", "llama3": "llama3", "yarn": "yarn"}
YARN_DEFAULTS = {"beta_fast": 32, "beta_slow": 1, "truncate": True}  # the only YaRN settings triform holds


class LlamaFamily(Family):
    model_types: ClassVar[tuple[str, ...]] = ("llama",)
    architecture: ClassVar[str] = "LlamaForCausalLM"
    objective = "clm"
    prefix = "model."
    ignored = (r"^lm_head\.weight$", r"\.rotary_emb\.inv_freq$")  # a tied copy, a buffer of older files
    free_head_size = True
    grouped_query = query_key_norms = own_qkv_bias = True  # each family's own rules below say which it has
    fixed: ClassVar[dict[str, object]] = dict(
        arch="stack",
        position="rotary",
        norm="rmsnorm",
        norm_placement="pre",
        gated=True,
        token_types=0,
        embedding_norm=False,
        scale_embeddings=False,
        scale_attention=True,
        output_transform=False,
        output_bias=False,
        scale_output=False,
        qk_norm=False,
    )
    special_tokens = {"llama": {"bos": "<s>", "eos": "</s>", "unk": "<unk>"}}

    # -- biases: what each family's config says, as triform's bias and qkv_bias ------------------
    def read_biases(self, hf: HFConfig) -> dict:
        attention, feedforward = hf.get("attention_bias", bool, False), hf.get("mlp_bias", bool, False)
        if attention != feedforward:
            raise hf.error(
                "mlp_bias",
                f"{feedforward} with attention_bias {attention}: triform has one bias setting for the "
                "attention output and the feed-forward projections",
            )
        return dict(bias=attention)

    def bias_problems(self, config: ModelConfig, model_type: str) -> list[str]:
        if config.attention_bias != config.bias:
            return [
                f"model.qkv_bias = {config.qkv_bias} (Hugging Face {model_type} has biases on q, k, v and o, or none)"
            ]
        return []

    def write_biases(self, config: ModelConfig) -> dict:
        return {"attention_bias": config.bias, "mlp_bias": config.bias}

    def window(self, values: dict) -> int | None:
        """The sliding window of attention, where the config has one."""
        return None

    # -- import ------------------------------------------------------------------------------------
    def read_config(self, hf: HFConfig, tensors) -> ModelConfig:
        d_model, n_heads = hf.get("hidden_size"), hf.get("num_attention_heads")
        n_kv_heads = hf.get("num_key_value_heads", int, n_heads)
        d_head = hf.get("head_dim", int, d_model // n_heads)
        return ModelConfig(
            arch="stack",
            vocab_size=hf.get("vocab_size"),
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=None if n_kv_heads == n_heads else n_kv_heads,
            d_head=None if d_head * n_heads == d_model else d_head,
            d_ff=hf.get("intermediate_size"),
            n_layers=hf.get("num_hidden_layers"),
            max_len=self.read_max_len(hf),
            position="rotary",
            **read_rotary(hf),
            norm="rmsnorm",
            norm_eps=hf.get("rms_norm_eps", float, 1e-6),
            norm_placement="pre",
            activation=hf.activation("hidden_act", "silu"),
            gated=True,
            **self.read_biases(hf),
            qk_norm=self.fixed["qk_norm"],
            dropout=0.0,
            attention_dropout=hf.get("attention_dropout", float, 0.0),
            tie_embeddings=tied(tensors, "lm_head.weight", EMBEDDINGS),
        )

    def read_max_len(self, hf: HFConfig) -> int:
        longest, window = hf.get("max_position_embeddings"), self.window(hf.values)
        if window is None or window >= longest:
            return longest
        warnings.warn(
            f"{hf.source}: attention within a sliding window of {window} tokens, which triform does not have; "
            f"the model's max_len is {window} (not max_position_embeddings {longest}), within which both attend alike",
            ConversionWarning,
            stacklevel=4,
        )
        return window

    def rules(self, config: ModelConfig, hf: dict) -> list[Rule]:
        kv = config.kv_heads * config.head_dim
        sizes = (config.n_heads * config.head_dim, kv, kv)
        rules = [
            rule("stack.embeddings.token.weight", EMBEDDINGS),
            rule("stack.final_norm.weight", "model.norm.weight"),
        ]
        for i in range(config.n_layers):
            ours, theirs = f"stack.blocks.{i}.", f"model.layers.{i}."
            attention, mlp = theirs + "self_attn.", theirs + "mlp."
            rules += [
                rule(ours + "norms.0.weight", theirs + "input_layernorm.weight"),
                *fused(
                    ours + "self_attention.query_key_value",
                    [f"{attention}{name}_proj" for name in "qkv"],
                    bias=config.attention_bias,
                    sizes=sizes,
                ),
                *linear(ours + "self_attention.out", attention + "o_proj", bias=config.bias),
                rule(ours + "norms.1.weight", theirs + "post_attention_layernorm.weight"),
                *fused(ours + "feedforward.gate_up", [mlp + "gate_proj", mlp + "up_proj"], bias=config.bias),
                *linear(ours + "feedforward.down", mlp + "down_proj", bias=config.bias),
            ]
            if config.qk_norm:
                rules += [
                    rule(ours + "self_attention.query_norm.weight", attention + "q_norm.weight"),
                    rule(ours + "self_attention.key_norm.weight", attention + "k_norm.weight"),
                ]
        if not config.tie_embeddings:
            rules.append(rule("head.projection.weight", "lm_head.weight"))
        return rules

    # -- export ------------------------------------------------------------------------------------
    def problems(self, config: ModelConfig, model_type: str) -> list[str]:
        return super().problems(config, model_type) + self.bias_problems(config, model_type)

    def write_config(self, config: ModelConfig, model_type: str, token_ids: dict, base: dict) -> dict:
        base = {key: value for key, value in base.items() if key != "rope_scaling"}  # rewritten as rope_parameters
        return {
            **base,
            "model_type": model_type,
            "architectures": [self.architecture],
            "vocab_size": config.vocab_size,
            "hidden_size": config.d_model,
            "intermediate_size": config.d_ff,
            "num_hidden_layers": config.n_layers,
            "num_attention_heads": config.n_heads,
            "num_key_value_heads": config.kv_heads,
            "head_dim": config.head_dim,
            "hidden_act": hf_activation(config.activation, base.get("hidden_act")),
            "max_position_embeddings": self.write_max_len(config, base),
            "rms_norm_eps": config.norm_eps,
            "attention_dropout": config.attention_dropout,
            "tie_word_embeddings": config.tie_embeddings,
            **write_rotary(config),
            **self.write_biases(config),
            "bos_token_id": token_ids.get("bos"),
            "eos_token_id": kept(base, "eos_token_id", token_ids.get("eos")),
            "pad_token_id": token_ids.get("pad"),
        }

    def write_max_len(self, config: ModelConfig, base: dict) -> int:
        """An imported model's own max_position_embeddings when triform held it to the window."""
        longest, window = base.get("max_position_embeddings"), self.window(base)
        if isinstance(longest, int) and window is not None and min(longest, window) == config.max_len:
            return longest
        return config.max_len


class MistralFamily(LlamaFamily):
    model_types = ("mistral",)
    architecture = "MistralForCausalLM"
    fixed = {**LlamaFamily.fixed, "bias": False}
    special_tokens = {"mistral": LlamaFamily.special_tokens["llama"]}

    def read_biases(self, hf: HFConfig) -> dict:
        return dict(bias=False)

    def bias_problems(self, config: ModelConfig, model_type: str) -> list[str]:
        return [] if not config.attention_bias else ["model.qkv_bias = True (Hugging Face mistral has no biases)"]

    def write_biases(self, config: ModelConfig) -> dict:
        return {}

    def window(self, values: dict) -> int | None:
        window = values.get("sliding_window")
        return window if isinstance(window, int) else None


QWEN_TOKENS = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>"}  # Qwen has no BOS of its own


class Qwen2Family(MistralFamily):
    model_types = ("qwen2",)
    architecture = "Qwen2ForCausalLM"
    fixed = {**LlamaFamily.fixed, "bias": False, "qkv_bias": True}
    special_tokens = {"qwen2": QWEN_TOKENS}

    def read_biases(self, hf: HFConfig) -> dict:
        return dict(bias=False, qkv_bias=True)

    def bias_problems(self, config: ModelConfig, model_type: str) -> list[str]:
        return []  # fixed says it all

    def window(self, values: dict) -> int | None:
        layer_types = values.get("layer_types") or []
        if values.get("use_sliding_window") or "sliding_attention" in layer_types:
            return super().window(values)
        return None


class Qwen3Family(Qwen2Family):
    model_types = ("qwen3",)
    architecture = "Qwen3ForCausalLM"
    fixed = {**LlamaFamily.fixed, "bias": False, "qk_norm": True}
    special_tokens = {"qwen3": QWEN_TOKENS}

    def read_biases(self, hf: HFConfig) -> dict:
        hf.require(
            "attention_bias", (False,), default=False
        )  # on q, k, v and o, where triform's bias covers o and the MLP
        return dict(bias=False)

    def bias_problems(self, config: ModelConfig, model_type: str) -> list[str]:
        return (
            []
            if not config.attention_bias
            else ["model.qkv_bias = True (Hugging Face qwen3 has no q/k/v biases alone)"]
        )

    def write_biases(self, config: ModelConfig) -> dict:
        return {"attention_bias": False}


def kept(base: dict, key: str, value):
    """The original's value where it says the same (an instruct model's list of end tokens), else `value`."""
    original = base.get(key)
    if original == value or (isinstance(original, list) and value in original):
        return original
    return value


def read_rotary(hf: HFConfig) -> dict:
    """ModelConfig's rotary fields from rope_parameters, or rope_scaling and rope_theta."""
    values = hf.values
    field = "rope_parameters" if values.get("rope_parameters") is not None else "rope_scaling"
    parameters = values.get(field) or {}
    if not isinstance(parameters, dict) or any(isinstance(value, dict) for value in parameters.values()):
        raise hf.error(field, "expected one object of RoPE parameters (one per layer type is not supported)")
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if kind not in SCALINGS:
        raise hf.error(field, f"RoPE type {kind!r} is not supported (supported: {', '.join(SCALINGS)})")
    partial = parameters.get("partial_rotary_factor", values.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise hf.error(field, f"partial_rotary_factor {partial} is not supported (triform rotates the whole head)")
    rotary = dict(rotary_base=float(parameters.get("rope_theta", values.get("rope_theta", 10000.0))))
    if kind == "default":
        return rotary
    original = parameters.get("original_max_position_embeddings", values.get("original_max_position_embeddings"))
    original = original if original is not None else hf.get("max_position_embeddings")
    factor = parameters.get("factor")
    if kind == "yarn":
        check_yarn(hf, field, parameters)
        factor = factor if factor is not None else hf.get("max_position_embeddings") / original
    if not isinstance(factor, (int, float)) or isinstance(factor, bool):
        raise hf.error(field, f"RoPE type {kind!r} needs a numeric factor, got {factor!r}")
    rotary.update(rotary_scaling=SCALINGS[kind], rotary_factor=float(factor))
    if kind in ("llama3", "yarn"):
        rotary["rotary_original_max_len"] = original
    if kind == "llama3":
        rotary.update(
            rotary_low_frequency_factor=float(parameters.get("low_freq_factor", 1.0)),
            rotary_high_frequency_factor=float(parameters.get("high_freq_factor", 4.0)),
        )
    return rotary


def check_yarn(hf: HFConfig, field: str, parameters: dict) -> None:
    for name in ("attention_factor", "mscale", "mscale_all_dim"):
        if parameters.get(name) not in (None, 0):
            raise hf.error(
                field, f"YaRN's {name} {parameters[name]!r} is not supported (triform uses 0.1 ln(factor) + 1)"
            )
    for name, default in YARN_DEFAULTS.items():
        if parameters.get(name) not in (None, default):
            raise hf.error(field, f"YaRN's {name} {parameters[name]!r} is not supported (supported: {default})")


def write_rotary(config: ModelConfig) -> dict:
    """rope_parameters as transformers 5 reads them, and rope_theta beside them for earlier readers."""
    parameters: dict = {"rope_type": "default", "rope_theta": config.rotary_base}
    if config.rotary_scaling != "none":
        parameters.update(rope_type=config.rotary_scaling, factor=config.rotary_factor)
    if config.rotary_scaling in ("llama3", "yarn"):
        parameters["original_max_position_embeddings"] = config.rotary_original_max_len
    if config.rotary_scaling == "llama3":
        parameters.update(
            low_freq_factor=config.rotary_low_frequency_factor, high_freq_factor=config.rotary_high_frequency_factor
        )
    return {"rope_parameters": parameters, "rope_theta": config.rotary_base}
