"""BART (Lewis et al. 2020) and Marian (Junczys-Dowmunt et al. 2018, as ported by Hugging Face).

Both are post-norm encoder-decoders with biases, one embedding table shared by the encoder, the
decoder and the output, and a `final_logits_bias` buffer added to the scores (a parameter in
triform, so fine-tuning may move it). They differ in positions: BART learns them, in tables whose
first two rows precede position 0; Marian adds a fixed sinusoidal table with the sines in the
first half and the cosines in the second ("sinusoidal-halves") and scales its embeddings.
"""

from __future__ import annotations

from triform.config import ModelConfig
from triform.convert.family import Family, tied
from triform.convert.hf_config import HFConfig, hf_activation
from triform.convert.mapping import Rule, fused, linear, rule

BART_POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding reads row position + 2
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which both models use
SHARED = "model.shared.weight"


class BartFamily(Family):
    model_types = ("bart",)
    objective = "denoise"  # Lewis et al. 2020
    prefix = "model."
    copies = {"model.encoder.embed_tokens.weight": SHARED, "model.decoder.embed_tokens.weight": SHARED}
    ignored = (r"^lm_head\.weight$",)  # the tied output projection, when the file holds a copy
    decoder_start_role = "eos"
    needs_tokens = ("pad", "eos", "decoder_start")
    fixed = dict(
        arch="encoder-decoder",
        position="learned",
        norm="layernorm",
        norm_eps=LAYER_NORM_EPS,
        norm_placement="post",
        gated=False,
        bias=True,
        token_types=0,
        embedding_norm=True,
        scale_attention=True,
        output_transform=False,
        scale_output=False,
        share_embeddings=True,
    )
    special_tokens = {
        "bart": {
            "bos": "<s>",
            "eos": "</s>",
            "pad": "<pad>",
            "unk": "<unk>",
            "mask": "<mask>",
            "cls": "<s>",
            "sep": "</s>",
        }
    }
    architecture = "BartForConditionalGeneration"

    def canonical_names(self, tensors):
        tensors = super().canonical_names(tensors)
        # A base-model checkpoint has no head; "model." was added to the head names too, undo that.
        for name in ("final_logits_bias", "lm_head.weight"):
            if self.prefix + name in tensors:
                tensors[name] = tensors.pop(self.prefix + name)
        return tensors

    def read_config(self, hf: HFConfig, tensors) -> ModelConfig:
        n_layers = hf.get("encoder_layers")
        n_decoder_layers = hf.get("decoder_layers")
        return ModelConfig(
            arch="encoder-decoder",
            vocab_size=hf.get("vocab_size"),
            d_model=hf.get("d_model"),
            n_heads=hf.same("encoder_attention_heads", "decoder_attention_heads"),
            d_ff=hf.same("encoder_ffn_dim", "decoder_ffn_dim"),
            n_layers=n_layers,
            n_decoder_layers=None if n_decoder_layers == n_layers else n_decoder_layers,
            max_len=hf.get("max_position_embeddings"),
            norm="layernorm",
            norm_eps=LAYER_NORM_EPS,
            norm_placement="post",
            activation=hf.activation("activation_function", "gelu"),
            dropout=hf.get("dropout", float, 0.1),
            attention_dropout=hf.get("attention_dropout", float, 0.0),
            scale_embeddings=hf.get("scale_embedding", bool, False),
            share_embeddings=True,
            tie_embeddings=tied(tensors, "lm_head.weight", SHARED),
            output_bias="final_logits_bias" in tensors,
            **self.positions(hf),
        )

    def positions(self, hf: HFConfig) -> dict:
        return dict(position="learned", embedding_norm=True)

    def embedding_rules(self, stack: str) -> list[Rule]:
        return [
            rule(
                f"{stack}.embeddings.position.embedding.weight",
                f"model.{stack}.embed_positions.weight",
                skip_rows=BART_POSITION_OFFSET,
            ),
            *linear(f"{stack}.embeddings.norm", f"model.{stack}.layernorm_embedding"),
        ]

    def rules(self, config: ModelConfig, hf: dict) -> list[Rule]:
        rules = [rule("encoder.embeddings.token.weight", SHARED)]
        rules += self.embedding_rules("encoder") + self.embedding_rules("decoder")
        for i in range(config.n_layers):
            ours, theirs = f"encoder.blocks.{i}.", f"model.encoder.layers.{i}."
            rules += [
                *attention(ours + "self_attention", theirs + "self_attn"),
                *linear(ours + "norms.0", theirs + "self_attn_layer_norm"),
                *feedforward(ours, theirs),
                *linear(ours + "norms.1", theirs + "final_layer_norm"),
            ]
        for i in range(config.decoder_layers):
            ours, theirs = f"decoder.blocks.{i}.", f"model.decoder.layers.{i}."
            rules += [
                *attention(ours + "self_attention", theirs + "self_attn"),
                *linear(ours + "norms.0", theirs + "self_attn_layer_norm"),
                *linear(ours + "cross_attention.query", theirs + "encoder_attn.q_proj"),
                *fused(ours + "cross_attention.key_value", [f"{theirs}encoder_attn.{n}_proj" for n in "kv"]),
                *linear(ours + "cross_attention.out", theirs + "encoder_attn.out_proj"),
                *linear(ours + "norms.1", theirs + "encoder_attn_layer_norm"),
                *feedforward(ours, theirs),
                *linear(ours + "norms.2", theirs + "final_layer_norm"),
            ]
        if config.output_bias:
            rules.append(rule("head.bias", "final_logits_bias", flat=True))
        if not config.tie_embeddings:
            rules.append(rule("head.projection.weight", "lm_head.weight"))
        return rules

    def write_config(self, config: ModelConfig, model_type: str, token_ids: dict, base: dict) -> dict:
        return {
            **base,
            "model_type": model_type,
            "architectures": [self.architecture],
            "vocab_size": config.vocab_size,
            "d_model": config.d_model,
            "encoder_layers": config.n_layers,
            "decoder_layers": config.decoder_layers,
            "encoder_attention_heads": config.n_heads,
            "decoder_attention_heads": config.n_heads,
            "encoder_ffn_dim": config.d_ff,
            "decoder_ffn_dim": config.d_ff,
            "max_position_embeddings": config.max_len,
            "activation_function": hf_activation(config.activation, base.get("activation_function")),
            "dropout": config.dropout,
            "attention_dropout": config.attention_dropout,
            "activation_dropout": 0.0,
            "scale_embedding": config.scale_embeddings,
            "tie_word_embeddings": config.tie_embeddings,
            "is_encoder_decoder": True,
            "pad_token_id": token_ids.get("pad"),
            "bos_token_id": token_ids.get("bos"),
            "eos_token_id": token_ids.get("eos"),
            "decoder_start_token_id": token_ids.get("decoder_start"),
            "forced_eos_token_id": base.get("forced_eos_token_id", token_ids.get("eos")),
        }


class MarianFamily(BartFamily):
    model_types = ("marian",)
    objective = "seq2seq"  # translation models, trained on parallel data
    ignored = (r"^lm_head\.weight$", r"^model\.(en|de)coder\.embed_positions\.weight$")
    decoder_start_role = "pad"
    fixed = {**BartFamily.fixed, "position": "sinusoidal-halves", "embedding_norm": False}
    special_tokens = {"marian": {"eos": "</s>", "pad": "<pad>", "unk": "<unk>"}}
    architecture = "MarianMTModel"

    def read_config(self, hf: HFConfig, tensors) -> ModelConfig:
        hf.require("share_encoder_decoder_embeddings", (True,), default=True)
        if hf.get("decoder_vocab_size", int, hf.get("vocab_size")) != hf.get("vocab_size"):
            raise hf.error("decoder_vocab_size", "a target vocabulary of its own is not supported")
        return super().read_config(hf, tensors)

    def positions(self, hf: HFConfig) -> dict:
        # The table is a function of the config and not in the file (older exports hold a copy, ignored).
        return dict(position="sinusoidal-halves", embedding_norm=False)

    def embedding_rules(self, stack: str) -> list[Rule]:
        return []

    def write_config(self, config: ModelConfig, model_type: str, token_ids: dict, base: dict) -> dict:
        hf = super().write_config(config, model_type, token_ids, base)
        hf.update(share_encoder_decoder_embeddings=True, decoder_vocab_size=config.vocab_size, bos_token_id=None)
        return hf


def attention(ours: str, theirs: str) -> list[Rule]:
    return [
        *fused(ours + ".query_key_value", [f"{theirs}.{n}_proj" for n in ("q", "k", "v")]),
        *linear(ours + ".out", theirs + ".out_proj"),
    ]


def feedforward(ours: str, theirs: str) -> list[Rule]:
    return [*linear(ours + "feedforward.up", theirs + "fc1"), *linear(ours + "feedforward.down", theirs + "fc2")]
