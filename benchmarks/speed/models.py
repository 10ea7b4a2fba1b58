"""The three benchmark models, each built twice: in triform, and in `transformers` with the same
weights, copied through triform's own converter (`export_hf`), so that both hold the same numbers.

Sizes are those of the benchmark's statement; everything else follows the family's preset
(GPT-2, BERT, BART). Attention dropout is off in all three: with it on, both libraries leave the
fused attention kernel for the unfused one, and the benchmark would measure that kernel choice.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from triform.checkpoint import Pretrained
from triform.config import ModelConfig
from triform.convert import export_hf
from triform.models import build_model
from triform.models.presets import get_preset
from triform.vocab import SpecialTokens

SPECIALS = SpecialTokens(pad=0, unk=1, bos=2, eos=3, mask=4, sep=5, cls=6)
BODY = dict(n_layers=6, d_model=384, n_heads=6, d_ff=1536, dropout=0.1, attention_dropout=0.0)
# Smaller twins of the same three models, for a smoke test of the benchmark itself.
TINY_BODY = dict(n_layers=2, d_model=64, n_heads=4, d_ff=256, dropout=0.1, attention_dropout=0.0)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: ModelConfig
    hf_class: str  # the transformers class that loads the exported folder
    hf_overrides: dict  # config fields given to from_pretrained


def model_specs(tiny: bool = False) -> dict[str, ModelSpec]:
    body = TINY_BODY if tiny else BODY
    vocab = (lambda n: 512) if tiny else (lambda n: n)
    gpt = get_preset("gpt2-small").model.replace(**body, max_len=256, vocab_size=vocab(8192))
    bert = get_preset("bert-base").model.replace(**body, max_len=128, vocab_size=vocab(30522))
    bart = get_preset("bart-base").model.replace(**body, max_len=128, vocab_size=vocab(8192))
    return {
        # GPT-2's "gelu_new" is written in Python in transformers; "gelu_pytorch_tanh" is the same
        # function as one kernel, its fastest spelling, which is the fair one to compare against.
        "gpt": ModelSpec("gpt", gpt, "GPT2LMHeadModel", {"activation_function": "gelu_pytorch_tanh"}),
        "bert": ModelSpec("bert", bert, "BertForMaskedLM", {}),
        "bart": ModelSpec("bart", bart, "BartForConditionalGeneration", {}),
    }


def build_twins(spec: ModelSpec, seed: int = 0):
    """(triform model, transformers model), in training mode, with identical weights."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = build_model(spec.config)
    with tempfile.TemporaryDirectory() as folder:
        export_hf(Pretrained(model, spec.config, SPECIALS), f"{folder}/hf")
        hf_class = getattr(transformers, spec.hf_class)
        reference = hf_class.from_pretrained(f"{folder}/hf", attn_implementation="sdpa", **spec.hf_overrides)
    return model.train(), reference.train()


def parity_inputs(spec: ModelSpec, batch: int = 2, length: int = 24) -> dict:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(10, spec.config.vocab_size, (batch, length), generator=generator)
    if spec.config.arch == "encoder-decoder":
        target = torch.randint(10, spec.config.vocab_size, (batch, length // 2), generator=generator)
        return {"source": ids, "target": target}
    return {"ids": ids}


def triform_logits(model, spec: ModelSpec, inputs: dict) -> torch.Tensor:
    if spec.config.arch == "encoder-decoder":
        return model(inputs["source"], inputs["target"])
    pattern = "bidirectional" if spec.name == "bert" else "causal"
    return model(inputs["ids"], pattern)


def reference_logits(reference, spec: ModelSpec, inputs: dict) -> torch.Tensor:
    if spec.config.arch == "encoder-decoder":
        return reference(input_ids=inputs["source"], decoder_input_ids=inputs["target"]).logits
    return reference(input_ids=inputs["ids"]).logits


@torch.no_grad()
def check_same_logits(model, reference, spec: ModelSpec, tolerance: float = 1e-4) -> float:
    """The largest difference between the two models' fp32 logits (eval mode); an error above tolerance."""
    was_training = model.training, reference.training
    model.eval(), reference.eval()
    try:
        inputs = parity_inputs(spec)
        difference = (triform_logits(model, spec, inputs) - reference_logits(reference, spec, inputs)).abs().max()
    finally:
        model.train(was_training[0]), reference.train(was_training[1])
    if not difference <= tolerance:
        raise SystemExit(f"{spec.name}: triform and transformers disagree by {float(difference):.2e} (> {tolerance})")
    return float(difference)


def matmul_parameters(config: ModelConfig) -> dict[str, int]:
    """Weights that take part in matrix products, per place they are applied (PaLM, appendix B)."""
    d, d_ff, inner = config.d_model, config.d_ff, config.n_heads * config.head_dim
    feedforward = (3 if config.gated else 2) * d * d_ff
    self_layer = 4 * d * inner + feedforward  # q, k, v, out + feed-forward
    head = d * config.vocab_size + (d * d if config.output_transform else 0)
    counts = {"per_layer": self_layer, "head": head}
    if config.arch == "encoder-decoder":
        counts["decoder_per_layer"] = self_layer + 2 * d * inner  # + cross q, out
        counts["cross_key_value_per_layer"] = 2 * d * inner  # applied to the memory, per source token
    return counts
