"""Shared helpers: tiny models (d_model 32, 2 layers, vocab 100) and a synthetic vocabulary."""

from __future__ import annotations

import pytest
import torch

from triform.config import ModelConfig
from triform.kernels.calibrate import Calibration, set_calibration
from triform.vocab import SpecialTokens

VOCAB_SIZE = 100
SPECIALS = SpecialTokens(pad=0, unk=1, bos=2, eos=3, mask=4, sep=5, cls=6, sentinels=tuple(range(7, 27)))
FIRST_WORD = 27  # ids from here on are ordinary tokens


def tiny_config(arch: str = "stack", **changes) -> ModelConfig:
    values = dict(
        arch=arch,
        vocab_size=VOCAB_SIZE,
        d_model=32,
        n_heads=2,
        d_ff=64,
        n_layers=2,
        max_len=64,
        dropout=0.0,
        attention_dropout=0.0,
    )
    values.update(changes)
    return ModelConfig(**values)


# One config per distinct set of parts, so that every part meets every test at least once.
VARIANTS = {
    "learned-pre-layernorm": dict(position="learned"),
    "sinusoidal-post": dict(position="sinusoidal", norm_placement="post", scale_embeddings=True, activation="relu"),
    "rotary-rmsnorm-swiglu": dict(position="rotary", norm="rmsnorm", activation="silu", gated=True, bias=False),
    # Qwen's parts: one key/value head for both query heads, q/k/v biases alone, q/k norms, YaRN.
    "grouped-query-qwen": dict(
        position="rotary",
        norm="rmsnorm",
        activation="silu",
        gated=True,
        bias=False,
        qkv_bias=True,
        n_kv_heads=1,
        qk_norm=True,
        rotary_scaling="yarn",
        rotary_factor=4.0,
        rotary_original_max_len=16,
    ),
    "relative-t5": dict(
        position="relative",
        norm="rmsnorm",
        bias=False,
        scale_attention=False,
        scale_output=True,
        relative_buckets=8,
        relative_max_distance=16,
    ),
    "bert-parts": dict(
        position="learned",
        norm_placement="post",
        token_types=2,
        embedding_norm=True,
        output_transform=True,
        output_bias=True,
        tie_embeddings=True,
        activation="gelu_tanh",
        gated=True,
    ),
}


# Tiny models run fastest on one thread, and the suite runs as two such workers (make test).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_ids(batch: int, length: int, generator_seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(generator_seed)
    return torch.randint(FIRST_WORD, VOCAB_SIZE, (batch, length), generator=generator)


@pytest.fixture
def forced():
    """force(kernel): from then on, calibration measures `kernel` fastest wherever it is a candidate."""
    old = []

    def force(kernel: str) -> Calibration:
        calibration = Calibration(timer=lambda name, run: 0.0 if name == kernel else 1.0, read_disk=False)
        old.append(set_calibration(calibration))
        return calibration

    yield force
    if old:
        set_calibration(old[0])
