"""Named presets: plain data over the same parts.

Each preset is a ModelConfig and the objective it was pretrained with. The `tiny-*` presets keep
every architectural choice of their full-size model and shrink only the sizes, so that they train
in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triform.config import ModelConfig
from triform.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    model: ModelConfig
    objective: str
    reference: str
    objective_options: dict = field(default_factory=dict)


VASWANI_BASE = ModelConfig(
    arch="encoder-decoder",
    vocab_size=37000,
    d_model=512,
    n_heads=8,
    d_ff=2048,
    n_layers=6,
    max_len=1024,
    position="sinusoidal",
    norm_placement="post",
    norm_eps=1e-6,
    activation="relu",
    dropout=0.1,
    attention_dropout=0.0,
    scale_embeddings=True,
)
GPT1 = ModelConfig(
    vocab_size=40478,
    d_model=768,
    n_heads=12,
    d_ff=3072,
    n_layers=12,
    max_len=512,
    position="learned",
    norm_placement="post",
    activation="gelu",
)
GPT2_SMALL = ModelConfig(
    vocab_size=50257,
    d_model=768,
    n_heads=12,
    d_ff=3072,
    n_layers=12,
    max_len=1024,
    position="learned",
    norm_placement="pre",
    activation="gelu_tanh",
)
BERT_BASE = ModelConfig(
    vocab_size=30522,
    d_model=768,
    n_heads=12,
    d_ff=3072,
    n_layers=12,
    max_len=512,
    position="learned",
    norm_placement="post",
    norm_eps=1e-12,
    activation="gelu",
    token_types=2,
    embedding_norm=True,
    output_transform=True,
    output_bias=True,
)
T5_SMALL = ModelConfig(
    arch="encoder-decoder",
    vocab_size=32128,
    d_model=512,
    n_heads=8,
    d_head=64,
    d_ff=2048,
    n_layers=6,
    max_len=512,
    position="relative",
    norm="rmsnorm",
    norm_eps=1e-6,
    norm_placement="pre",
    activation="relu",
    bias=False,
    attention_dropout=0.0,
    scale_attention=False,
    scale_output=True,
)
BART_BASE = ModelConfig(
    arch="encoder-decoder",
    vocab_size=50265,
    d_model=768,
    n_heads=12,
    d_ff=3072,
    n_layers=6,
    max_len=1024,
    position="learned",
    norm_placement="post",
    activation="gelu",
    embedding_norm=True,
    output_bias=True,
)
TINYLLAMA = ModelConfig(
    vocab_size=32000,
    d_model=2048,
    n_heads=32,
    n_kv_heads=4,
    d_ff=5632,
    n_layers=22,
    max_len=2048,
    position="rotary",
    norm="rmsnorm",
    norm_eps=1e-5,
    activation="silu",
    gated=True,
    bias=False,
    dropout=0.0,
    attention_dropout=0.0,
    tie_embeddings=False,
)

TINY = dict(d_model=64, n_heads=4, d_ff=256, n_layers=2, vocab_size=2048, max_len=256)


def _tiny(config: ModelConfig) -> ModelConfig:
    extra = {"d_head": 16} if config.d_head is not None else {}
    if config.n_kv_heads is not None:
        extra["n_kv_heads"] = 2  # still grouped: two query heads per key/value head
    return config.replace(**TINY, **extra)


_FULL = [
    Preset(
        "vaswani-base",
        VASWANI_BASE,
        "seq2seq",
        "Vaswani et al. 2017, Attention Is All You Need",
        {"label_smoothing": 0.1},
    ),
    Preset("gpt1", GPT1, "clm", "Radford et al. 2018, Improving Language Understanding by Generative Pre-Training"),
    Preset("gpt2-small", GPT2_SMALL, "clm", "Radford et al. 2019, Language Models are Unsupervised Multitask Learners"),
    Preset("bert-base", BERT_BASE, "mlm", "Devlin et al. 2019, BERT"),
    Preset("t5-small", T5_SMALL, "span", "Raffel et al. 2020, Exploring the Limits of Transfer Learning (T5)"),
    Preset("bart-base", BART_BASE, "denoise", "Lewis et al. 2020, BART"),
    Preset("tinyllama-1.1b", TINYLLAMA, "clm", "Zhang et al. 2024, TinyLlama: An Open-Source Small Language Model"),
    # One set of weights trained as every family (objectives/ul2.py): UniLM on BERT's stack (its base
    # model has BERT-base's shape), UL2 on T5's encoder-decoder (its ablations train T5 small and base).
    Preset("unilm-base", BERT_BASE, "unilm", "Dong et al. 2019, Unified Language Model Pre-training (UniLM)"),
    Preset("ul2-small", T5_SMALL, "ul2", "Tay et al. 2022, UL2: Unifying Language Learning Paradigms"),
]
_TINY_NAMES = {
    "vaswani-base": "tiny-vaswani",
    "gpt1": "tiny-gpt1",
    "gpt2-small": "tiny-gpt2",
    "bert-base": "tiny-bert",
    "t5-small": "tiny-t5",
    "bart-base": "tiny-bart",
    "tinyllama-1.1b": "tiny-llama",
    "unilm-base": "tiny-unilm",
    "ul2-small": "tiny-ul2",
}

PRESETS: dict[str, Preset] = {preset.name: preset for preset in _FULL}
for _preset in _FULL:
    _name = _TINY_NAMES[_preset.name]
    PRESETS[_name] = Preset(
        _name, _tiny(_preset.model), _preset.objective, _preset.reference, _preset.objective_options
    )
ALIASES = {"tiny-gpt": "tiny-gpt2"}


def get_preset(name: str) -> Preset:
    name = ALIASES.get(name, name)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}, {', '.join(ALIASES)}")
    return PRESETS[name]
