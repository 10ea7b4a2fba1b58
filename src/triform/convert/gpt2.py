"""GPT-2 (Radford et al. 2019): a pre-norm stack with learned positions and a tied output.

Hugging Face keeps GPT-2's original `Conv1D` layers, whose weights are stored (in, out), the
transpose of nn.Linear; `c_attn` already holds q, k and v side by side, in triform's fused order.
"""

from __future__ import annotations

from triform.config import ModelConfig
from triform.convert.family import Family, tied
from triform.convert.hf_config import HFConfig, hf_activation
from triform.convert.mapping import Rule, linear, rule


class GPT2Family(Family):
    model_types = ("gpt2",)
    objective = "clm"
    prefix = "transformer."
    # Causal-mask buffers of older checkpoints, and the tied output projection when the file holds a copy.
    ignored = (r"\.attn\.bias$", r"\.attn\.masked_bias$", r"^lm_head\.weight$")
    fixed = dict(
        arch="stack",
        position="learned",
        norm="layernorm",
        norm_placement="pre",
        gated=False,
        bias=True,
        token_types=0,
        embedding_norm=False,
        scale_embeddings=False,
        output_transform=False,
        output_bias=False,
        scale_output=False,
    )
    special_tokens = {"gpt2": {role: "<|endoftext|>" for role in ("bos", "eos", "unk", "pad")}}

    def read_config(self, hf: HFConfig, tensors) -> ModelConfig:
        hf.require("scale_attn_by_inverse_layer_idx", (False,), default=False)
        hf.require("add_cross_attention", (False,), default=False)
        d_model = hf.get("n_embd")
        return ModelConfig(
            arch="stack",
            vocab_size=hf.get("vocab_size"),
            d_model=d_model,
            n_heads=hf.get("n_head"),
            d_ff=hf.get("n_inner", int, 4 * d_model),
            n_layers=hf.get("n_layer"),
            max_len=hf.get("n_positions"),
            position="learned",
            norm="layernorm",
            norm_eps=hf.get("layer_norm_epsilon", float, 1e-5),
            norm_placement="pre",
            activation=hf.activation("activation_function", "gelu_new"),
            dropout=hf.get("resid_pdrop", float, 0.1),
            attention_dropout=hf.get("attn_pdrop", float, 0.1),
            scale_attention=hf.get("scale_attn_weights", bool, True),
            tie_embeddings=tied(tensors, "lm_head.weight", "transformer.wte.weight"),
        )

    def rules(self, config: ModelConfig, hf: dict) -> list[Rule]:
        rules = [
            rule("stack.embeddings.token.weight", "transformer.wte.weight"),
            rule("stack.embeddings.position.embedding.weight", "transformer.wpe.weight"),
            *linear("stack.final_norm", "transformer.ln_f"),
        ]
        for i in range(config.n_layers):
            ours, theirs = f"stack.blocks.{i}.", f"transformer.h.{i}."
            rules += [
                *linear(ours + "norms.0", theirs + "ln_1"),
                *linear(ours + "self_attention.query_key_value", theirs + "attn.c_attn", transposed=True),
                *linear(ours + "self_attention.out", theirs + "attn.c_proj", transposed=True),
                *linear(ours + "norms.1", theirs + "ln_2"),
                *linear(ours + "feedforward.up", theirs + "mlp.c_fc", transposed=True),
                *linear(ours + "feedforward.down", theirs + "mlp.c_proj", transposed=True),
            ]
        if not config.tie_embeddings:
            rules.append(rule("head.projection.weight", "lm_head.weight"))
        return rules

    def write_config(self, config: ModelConfig, model_type: str, token_ids: dict, base: dict) -> dict:
        return {
            **base,
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": config.vocab_size,
            "n_embd": config.d_model,
            "n_head": config.n_heads,
            "n_inner": config.d_ff,
            "n_layer": config.n_layers,
            "n_positions": config.max_len,
            "layer_norm_epsilon": config.norm_eps,
            "activation_function": hf_activation(config.activation, base.get("activation_function")),
            "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout,
            "attn_pdrop": config.attention_dropout,
            "scale_attn_weights": config.scale_attention,
            "scale_attn_by_inverse_layer_idx": False,
            "tie_word_embeddings": config.tie_embeddings,
            "bos_token_id": token_ids.get("bos"),
            "eos_token_id": token_ids.get("eos"),
            "pad_token_id": base.get("pad_token_id"),
        }
