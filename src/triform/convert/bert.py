"""BERT (Devlin et al. 2019), RoBERTa (Liu et al. 2019) and DistilBERT (Sanh et al. 2019).

All three are post-norm stacks with learned positions, a norm on the embeddings and, in their
masked-LM classes, a dense + activation + norm transform before a tied output projection with a
bias. RoBERTa's position table starts `pad_token_id + 1` rows in (its positions count from after
the padding index); DistilBERT drops token types and fixes every norm's epsilon at 1e-12.
A checkpoint without the LM head (`BertModel`) imports without the transform: its hidden states
are exact, its vocabulary scores are those of the tied embedding alone.
"""

from __future__ import annotations

from triform.config import ModelConfig
from triform.convert.family import Family, tied
from triform.convert.files import ConversionError
from triform.convert.hf_config import HFConfig, hf_activation
from triform.convert.mapping import Rule, fused, linear, rule

HEADS = {  # model type -> (dense, norm, bias, projection) of the masked-LM head
    "bert": (
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        "cls.predictions.bias",
        "cls.predictions.decoder.weight",
    ),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias", "lm_head.decoder.weight"),
    "distilbert": ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias", "vocab_projector.weight"),
}
PREFIXES = {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert."}
DISTILBERT_EPS = 1e-12  # hard-coded in Hugging Face's DistilBERT
# [CLS] and [SEP] open and close a BERT input, so they are also the [BOS] and [EOS] of triform's layouts.
BERT_TOKENS = dict(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]", bos="[CLS]", eos="[SEP]")
ROBERTA_TOKENS = dict(pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>", bos="<s>", eos="</s>")


class BertFamily(Family):
    model_types = ("bert", "roberta", "distilbert")
    objective = "mlm"
    # Buffers of older checkpoints, and the tied output projection when the file holds a copy.
    ignored = (
        r"\.position_ids$",
        r"\.token_type_ids$",
        r"^cls\.predictions\.decoder\.weight$",
        r"^lm_head\.decoder\.weight$",
        r"^vocab_projector\.weight$",
    )
    copies = {"cls.predictions.decoder.bias": "cls.predictions.bias", "lm_head.decoder.bias": "lm_head.bias"}
    fixed = dict(
        arch="stack",
        position="learned",
        norm="layernorm",
        norm_placement="post",
        gated=False,
        bias=True,
        embedding_norm=True,
        scale_embeddings=False,
        scale_attention=True,
        scale_output=False,
    )
    special_tokens = {"bert": BERT_TOKENS, "distilbert": BERT_TOKENS, "roberta": ROBERTA_TOKENS}

    def __init__(self, model_type: str = "bert"):
        self.prefix = PREFIXES[model_type]

    @staticmethod
    def position_offset(hf: dict) -> int:
        """RoBERTa numbers positions from pad_token_id + 1; BERT and DistilBERT from 0."""
        if hf["model_type"] != "roberta":
            return 0
        return (hf["pad_token_id"] if hf.get("pad_token_id") is not None else 1) + 1

    def read_config(self, hf: HFConfig, tensors) -> ModelConfig:
        dense, _, _, projection = HEADS[hf.model_type]
        has_head = f"{dense}.weight" in tensors
        tie = tied(tensors, projection, self.prefix + "embeddings.word_embeddings.weight")
        common = dict(
            arch="stack",
            vocab_size=hf.get("vocab_size"),
            position="learned",
            norm="layernorm",
            norm_placement="post",
            embedding_norm=True,
            output_transform=has_head,
            output_bias=has_head,
            tie_embeddings=tie,
        )
        if hf.model_type == "distilbert":
            return ModelConfig(
                **common,
                d_model=hf.get("dim"),
                n_heads=hf.get("n_heads"),
                d_ff=hf.get("hidden_dim"),
                n_layers=hf.get("n_layers"),
                max_len=hf.get("max_position_embeddings"),
                norm_eps=DISTILBERT_EPS,
                activation=hf.activation("activation"),
                dropout=hf.get("dropout", float, 0.1),
                attention_dropout=hf.get("attention_dropout", float, 0.1),
            )
        hf.require("position_embedding_type", ("absolute",), default="absolute")
        hf.require("is_decoder", (False,), default=False)
        hf.require("add_cross_attention", (False,), default=False)
        activation = hf.activation("hidden_act")
        if hf.model_type == "roberta" and has_head and activation != "gelu":
            raise hf.error(
                "hidden_act", "RoBERTa's LM head always uses gelu; triform's head uses the model's activation"
            )
        return ModelConfig(
            **common,
            d_model=hf.get("hidden_size"),
            n_heads=hf.get("num_attention_heads"),
            d_ff=hf.get("intermediate_size"),
            n_layers=hf.get("num_hidden_layers"),
            max_len=hf.get("max_position_embeddings") - self.position_offset(hf.values),
            norm_eps=hf.get("layer_norm_eps", float, 1e-12),
            activation=activation,
            dropout=hf.get("hidden_dropout_prob", float, 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", float, 0.1),
            token_types=hf.get("type_vocab_size", int, 2),
        )

    def rules(self, config: ModelConfig, hf: dict) -> list[Rule]:
        p = self.prefix
        distil = hf["model_type"] == "distilbert"
        embeddings = p + "embeddings."
        rules = [
            rule("stack.embeddings.token.weight", embeddings + "word_embeddings.weight"),
            rule(
                "stack.embeddings.position.embedding.weight",
                embeddings + "position_embeddings.weight",
                skip_rows=self.position_offset(hf),
            ),
            *linear("stack.embeddings.norm", embeddings + "LayerNorm"),
        ]
        if config.token_types:
            rules.append(rule("stack.embeddings.token_types.weight", embeddings + "token_type_embeddings.weight"))
        for i in range(config.n_layers):
            ours = f"stack.blocks.{i}."
            if distil:
                rules += distil_layer(ours, f"{p}transformer.layer.{i}.")
            else:
                rules += bert_layer(ours, f"{p}encoder.layer.{i}.")
        dense, norm, bias, projection = HEADS[hf["model_type"]]
        if config.output_transform:
            rules += [*linear("head.transform.0", dense), *linear("head.transform.2", norm)]
        if config.output_bias:
            rules.append(rule("head.bias", bias))
        if not config.tie_embeddings:
            rules.append(rule("head.projection.weight", projection))
        return rules

    def problems(self, config: ModelConfig, model_type: str) -> list[str]:
        found = super().problems(config, model_type)
        if config.output_transform != config.output_bias:
            found.append(
                f"model.output_bias = {config.output_bias} with model.output_transform = {config.output_transform} "
                f"(Hugging Face {model_type}'s LM head has both or neither)"
            )
        if not config.output_transform and not config.tie_embeddings:
            found.append(f"model.tie_embeddings = False without an LM head (Hugging Face {model_type} has none)")
        if model_type == "distilbert":
            if config.token_types:
                found.append(f"model.token_types = {config.token_types} (Hugging Face distilbert has none)")
            if config.norm_eps != DISTILBERT_EPS:
                found.append(f"model.norm_eps = {config.norm_eps} (Hugging Face distilbert fixes it at 1e-12)")
        elif config.token_types < 1:
            found.append(f"model.token_types = 0 (Hugging Face {model_type} has at least one token type)")
        if model_type == "roberta" and config.output_transform and config.activation != "gelu":
            found.append(f"model.activation = {config.activation!r} (Hugging Face roberta's LM head uses gelu)")
        return found

    def write_config(self, config: ModelConfig, model_type: str, token_ids: dict, base: dict) -> dict:
        head = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM", "distilbert": "DistilBertForMaskedLM"}
        body = {"bert": "BertModel", "roberta": "RobertaModel", "distilbert": "DistilBertModel"}
        hf = {
            **base,
            "model_type": model_type,
            "vocab_size": config.vocab_size,
            "architectures": [(head if config.output_transform else body)[model_type]],
            "pad_token_id": token_ids.get("pad"),
            "tie_word_embeddings": config.tie_embeddings,
        }
        if model_type == "distilbert":
            return {
                **hf,
                "dim": config.d_model,
                "n_heads": config.n_heads,
                "hidden_dim": config.d_ff,
                "n_layers": config.n_layers,
                "max_position_embeddings": config.max_len,
                "activation": hf_activation(config.activation, base.get("activation")),
                "dropout": config.dropout,
                "attention_dropout": config.attention_dropout,
                "sinusoidal_pos_embds": False,
            }
        hf.update(
            hidden_size=config.d_model,
            num_attention_heads=config.n_heads,
            intermediate_size=config.d_ff,
            num_hidden_layers=config.n_layers,
            layer_norm_eps=config.norm_eps,
            type_vocab_size=config.token_types,
            hidden_act=hf_activation(config.activation, base.get("hidden_act")),
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.attention_dropout,
            position_embedding_type="absolute",
        )
        if model_type == "roberta":
            if token_ids.get("pad") is None:
                raise ConversionError(
                    "Hugging Face roberta counts positions from its padding token; the model has none"
                )
            hf.update(bos_token_id=token_ids.get("bos"), eos_token_id=token_ids.get("eos"))
        hf["max_position_embeddings"] = config.max_len + self.position_offset(hf)
        return hf


def bert_layer(ours: str, theirs: str) -> list[Rule]:
    attention = theirs + "attention."
    return [
        *fused(ours + "self_attention.query_key_value", [attention + f"self.{n}" for n in ("query", "key", "value")]),
        *linear(ours + "self_attention.out", attention + "output.dense"),
        *linear(ours + "norms.0", attention + "output.LayerNorm"),
        *linear(ours + "feedforward.up", theirs + "intermediate.dense"),
        *linear(ours + "feedforward.down", theirs + "output.dense"),
        *linear(ours + "norms.1", theirs + "output.LayerNorm"),
    ]


def distil_layer(ours: str, theirs: str) -> list[Rule]:
    attention = theirs + "attention."
    return [
        *fused(ours + "self_attention.query_key_value", [attention + f"{n}_lin" for n in ("q", "k", "v")]),
        *linear(ours + "self_attention.out", attention + "out_lin"),
        *linear(ours + "norms.0", theirs + "sa_layer_norm"),
        *linear(ours + "feedforward.up", theirs + "ffn.lin1"),
        *linear(ours + "feedforward.down", theirs + "ffn.lin2"),
        *linear(ours + "norms.1", theirs + "output_layer_norm"),
    ]
