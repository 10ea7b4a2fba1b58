"""What the demo trains, and how much: the four models and the sizes of a run.

Every model is built from the same ModelConfig (the same parts, the same width and depth); only the
architecture, the objective and the attention pattern differ, which is the point of the demo.
"""

from __future__ import annotations

from dataclasses import dataclass

from triform.errors import TriformError


@dataclass(frozen=True)
class DemoModel:
    key: str  # folder name under runs/
    family: str
    arch: str
    objective: str
    pattern: str
    data: str  # "text" (real language) or "numbers" (the generated seq2seq task)
    what: str

    @property
    def triple(self) -> str:
        return f"{self.arch} + {self.objective} + {self.pattern}"


MODELS = (
    DemoModel(
        "gpt",
        "autoregressive",
        "stack",
        "clm",
        "causal",
        "text",
        "GPT: a stack reads text left to right and learns to predict each next token; it continues prompts.",
    ),
    DemoModel(
        "bert",
        "autoencoding",
        "stack",
        "mlm",
        "bidirectional",
        "text",
        "BERT: the same stack sees the whole text at once, 15 % of it masked, and learns to fill the masks.",
    ),
    DemoModel(
        "translator",
        "sequence-to-sequence",
        "encoder-decoder",
        "seq2seq",
        "causal",
        "numbers",
        "Vaswani et al.: an encoder reads the English, a decoder writes the German, attending to the encoder.",
    ),
)
CROSSOVERS = {
    "mlm-causal": DemoModel(
        "crossover",
        "cross-over",
        "stack",
        "mlm",
        "causal",
        "text",
        "The BERT objective under GPT's causal pattern: the masks are filled from the left context "
        "alone. Same weights, same data, one argument changed; compare its fills with BERT's.",
    ),
    "seq2seq-prefix": DemoModel(
        "crossover",
        "cross-over",
        "stack",
        "seq2seq",
        "prefix",
        "numbers",
        "No encoder at all: one stack reads `English [SEP]` as a bidirectional prefix and "
        "writes the German after it (UniLM), the translation task of the encoder-decoder.",
    ),
}


@dataclass(frozen=True)
class Size:
    """How much a demo run trains; `default` takes about two minutes on two CPU cores."""

    text_sentences: int  # real-language documents read (0: all)
    text_vocab: int
    text_steps: int
    text_batch: int
    max_len: int
    number_limit: int  # numbers below this
    number_examples: int  # training pairs
    number_steps: int
    number_batch: int
    mlm_steps_factor: int = 3  # mlm learns from 15 % of the tokens, and its steps cost less: it gets more of them
    d_model: int = 64
    n_layers: int = 2
    lr: float = 2e-3
    # Rotary positions (Su et al. 2021) for every model: with learned positions the masked models
    # stayed near the context-free guess for the demo's few hundred steps; with rotary ones they
    # used the words around each mask (default size: masked-token accuracy 5.7 % -> 14.9 %).
    position: str = "rotary"


SIZES = {
    # The smallest run in which each model beats its baseline (the tests run it).
    "quick": Size(
        text_sentences=2000,
        text_vocab=512,
        text_steps=150,
        text_batch=16,
        max_len=32,
        lr=3e-3,
        number_limit=10_000,
        number_examples=3000,
        number_steps=200,
        number_batch=32,
        mlm_steps_factor=3,
    ),
    "default": Size(
        text_sentences=0,
        text_vocab=2048,
        text_steps=300,
        text_batch=32,
        max_len=64,
        number_limit=10_000,
        number_examples=8000,
        number_steps=250,
        number_batch=64,
    ),
    "large": Size(
        text_sentences=0,
        text_vocab=4096,
        text_steps=2000,
        text_batch=32,
        max_len=64,
        number_limit=1_000_000,
        number_examples=40_000,
        number_steps=2000,
        number_batch=64,
        d_model=128,
        n_layers=3,
        lr=1e-3,
    ),
}
NUMBER_VOCAB = 320  # a few merges over the byte alphabet: German number words stay in learnable pieces
VALID_NUMBERS = 200


def demo_models(crossover: str) -> tuple[DemoModel, ...]:
    if crossover == "none":
        return MODELS
    if crossover not in CROSSOVERS:
        raise TriformError(f"--crossover: expected one of {', '.join([*CROSSOVERS, 'none'])}, got {crossover!r}")
    return MODELS + (CROSSOVERS[crossover],)


def model_fields(size: Size) -> dict:
    """The one model configuration every demo model shares (apart from its architecture)."""
    return dict(
        d_model=size.d_model,
        n_heads=4,
        d_ff=4 * size.d_model,
        n_layers=size.n_layers,
        max_len=size.max_len,
        position=size.position,
        dropout=0.0,
        attention_dropout=0.0,
    )
