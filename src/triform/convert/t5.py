"""T5 (Raffel et al. 2020), T5 v1.1 and mT5 (Xue et al. 2021).

Pre-norm with RMSNorm, no biases, no absolute positions: one relative position bias per stack,
held by the first layer's self-attention and shared by all layers. Attention scores are not divided
by sqrt(d_head) (the scale is folded into the initialisation). T5 v1.0 ties the output to the
embedding and rescales the decoder output by d_model ** -0.5 first; v1.1 and mT5 use a separate
output matrix, no rescaling and a gated GELU (tanh approximation) feed-forward.
"""

from __future__ import annotations

from triform.config import ModelConfig
from triform.convert.family import Family, tied
from triform.convert.hf_config import ACTIVATION_NAMES, ACTIVATIONS, HFConfig
from triform.convert.mapping import Rule, fused, linear, rule

SHARED = "shared.weight"


class T5Family(Family):
    model_types = ("t5", "mt5")
    objective = "span"  # Raffel et al. 2020; mT5 (Xue et al. 2021) too
    copies = {"encoder.embed_tokens.weight": SHARED, "decoder.embed_tokens.weight": SHARED}
    ignored = (r"^lm_head\.weight$",)  # the tied output projection, when the file holds a copy
    decoder_start_role = "pad"
    needs_tokens = ("pad", "eos")
    free_head_size = True
    fixed = dict(
        arch="encoder-decoder",
        position="relative",
        norm="rmsnorm",
        norm_placement="pre",
        bias=False,
        token_types=0,
        scale_embeddings=False,
        embedding_norm=False,
        scale_attention=False,
        output_transform=False,
        output_bias=False,
        share_embeddings=True,
    )
    tokens = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
    special_tokens = {"t5": tokens, "mt5": tokens}

    def read_config(self, hf: HFConfig, tensors) -> ModelConfig:
        activation, gated = feedforward_kind(hf)
        tie = tied(tensors, "lm_head.weight", SHARED)
        scale = False
        if hf.model_type == "t5":  # mT5 never rescales
            scale = hf.get("scale_decoder_outputs", bool, hf.get("tie_word_embeddings", bool, True))
        d_model = hf.get("d_model")
        if scale and not tie:
            # Scaling the hidden states before a separate output matrix is scaling the matrix.
            tensors["lm_head.weight"] = tensors["lm_head.weight"] * d_model**-0.5
            scale = False
        n_layers = hf.get("num_layers")
        n_decoder_layers = hf.get("num_decoder_layers", int, n_layers)
        dropout = hf.get("dropout_rate", float, 0.1)
        return ModelConfig(
            arch="encoder-decoder",
            vocab_size=hf.get("vocab_size"),
            d_model=d_model,
            n_heads=hf.get("num_heads"),
            d_head=hf.get("d_kv"),
            d_ff=hf.get("d_ff"),
            n_layers=n_layers,
            n_decoder_layers=None if n_decoder_layers == n_layers else n_decoder_layers,
            max_len=hf.get("n_positions", int, 512),
            position="relative",
            relative_buckets=hf.get("relative_attention_num_buckets", int, 32),
            relative_max_distance=hf.get("relative_attention_max_distance", int, 128),
            norm="rmsnorm",
            norm_eps=hf.get("layer_norm_epsilon", float, 1e-6),
            norm_placement="pre",
            activation=activation,
            gated=gated,
            bias=False,
            dropout=dropout,
            attention_dropout=dropout,
            scale_attention=False,
            tie_embeddings=tie,
            scale_output=scale,
            share_embeddings=True,
        )

    def rules(self, config: ModelConfig, hf: dict) -> list[Rule]:
        rules = [rule("encoder.embeddings.token.weight", SHARED)]
        for stack, n_layers in (("encoder", config.n_layers), ("decoder", config.decoder_layers)):
            rules += [
                rule(
                    f"{stack}.relative_bias.embedding.weight",
                    f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                ),
                rule(f"{stack}.final_norm.weight", f"{stack}.final_layer_norm.weight"),
            ]
            for i in range(n_layers):
                ours, theirs = f"{stack}.blocks.{i}.", f"{stack}.block.{i}.layer."
                rules += self_attention(ours, theirs + "0.")
                if stack == "decoder":
                    rules += cross_attention(ours, theirs + "1.")
                rules += feed_forward(ours, f"{theirs}{2 if stack == 'decoder' else 1}.", config.gated)
        if not config.tie_embeddings:
            rules.append(rule("head.projection.weight", "lm_head.weight"))
        return rules

    def problems(self, config: ModelConfig, model_type: str) -> list[str]:
        found = super().problems(config, model_type)
        if config.gated and config.activation == "gelu":
            found.append("model.activation = 'gelu' with model.gated (Hugging Face t5's gated-gelu is gelu_tanh)")
        if model_type == "mt5" and config.scale_output:
            found.append("model.scale_output = True (Hugging Face mt5 never rescales the decoder output)")
        return found

    def write_config(self, config: ModelConfig, model_type: str, token_ids: dict, base: dict) -> dict:
        name = ACTIVATION_NAMES[config.activation]
        if config.gated:
            name = "gelu" if config.activation == "gelu_tanh" else name  # "gated-gelu" means gelu_new
        hf = {
            **base,
            "model_type": model_type,
            "architectures": ["MT5ForConditionalGeneration" if model_type == "mt5" else "T5ForConditionalGeneration"],
            "vocab_size": config.vocab_size,
            "d_model": config.d_model,
            "d_kv": config.head_dim,
            "d_ff": config.d_ff,
            "num_layers": config.n_layers,
            "num_decoder_layers": config.decoder_layers,
            "num_heads": config.n_heads,
            "relative_attention_num_buckets": config.relative_buckets,
            "relative_attention_max_distance": config.relative_max_distance,
            "dropout_rate": config.dropout,
            "layer_norm_epsilon": config.norm_eps,
            "feed_forward_proj": ("gated-" if config.gated else "") + name,
            # Hugging Face reads tie_word_embeddings as "rescale the decoder output"; an unscaled tied
            # model is written with an explicit copy of the embedding as its output matrix.
            "tie_word_embeddings": config.scale_output,
            "is_encoder_decoder": True,
            "pad_token_id": token_ids.get("pad"),
            "eos_token_id": token_ids.get("eos"),
            "decoder_start_token_id": token_ids.get("decoder_start"),
        }
        hf.pop("scale_decoder_outputs", None)
        return hf

    def complete_export(self, config: ModelConfig, tensors: dict) -> None:
        """A tied but unscaled model gets its output matrix written out (see write_config)."""
        if config.tie_embeddings and not config.scale_output:
            tensors["lm_head.weight"] = tensors[SHARED].clone()


def feedforward_kind(hf: HFConfig) -> tuple[str, bool]:
    """feed_forward_proj is "relu", "gelu", ... or "gated-<activation>"; "gated-gelu" means gelu_new."""
    value = hf.get("feed_forward_proj", str, "relu")
    gated, _, name = value.rpartition("-")
    if gated not in ("", "gated"):
        raise hf.error("feed_forward_proj", f"expected '<activation>' or 'gated-<activation>', got {value!r}")
    if value == "gated-gelu":
        name = "gelu_new"
    if name not in ACTIVATIONS:
        raise hf.error("feed_forward_proj", f"activation {name!r} has no triform equivalent ({sorted(ACTIVATIONS)})")
    return ACTIVATIONS[name], gated == "gated"


def self_attention(ours: str, theirs: str) -> list[Rule]:
    attention = theirs + "SelfAttention."
    return [
        *fused(ours + "self_attention.query_key_value", [attention + n for n in "qkv"], bias=False),
        *linear(ours + "self_attention.out", attention + "o", bias=False),
        rule(ours + "norms.0.weight", theirs + "layer_norm.weight"),
    ]


def cross_attention(ours: str, theirs: str) -> list[Rule]:
    attention = theirs + "EncDecAttention."
    return [
        *linear(ours + "cross_attention.query", attention + "q", bias=False),
        *fused(ours + "cross_attention.key_value", [attention + "k", attention + "v"], bias=False),
        *linear(ours + "cross_attention.out", attention + "o", bias=False),
        rule(ours + "norms.1.weight", theirs + "layer_norm.weight"),
    ]


def feed_forward(ours: str, theirs: str, gated: bool) -> list[Rule]:
    dense = theirs + "DenseReluDense."
    if gated:  # wi_0 goes through the activation, wi_1 does not (Shazeer 2020)
        up = fused(ours + "feedforward.gate_up", [dense + "wi_0", dense + "wi_1"], bias=False)
    else:
        up = linear(ours + "feedforward.up", dense + "wi", bias=False)
    return [
        *up,
        *linear(ours + "feedforward.down", dense + "wo", bias=False),
        rule(f"{ours}norms.{2 if 'decoder' in ours else 1}.weight", theirs + "layer_norm.weight"),
    ]
