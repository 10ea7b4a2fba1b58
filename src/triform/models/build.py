"""The only code that reads a ModelConfig and turns it into modules.

Variants are chosen here by handing different modules to the same constructors (a rotary module to
attention, a post-norm block class, a gated feed-forward), never by flags threaded through them. So
are the kernels: the textbook parts of `nn/` run on plain torch, and `Parts` hands them this
device's faster linear layers, attention and dropout from `triform.kernels` (torchtune's builders
hand in `q_proj=` the same way). `TEXTBOOK` builds the same model on plain torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from triform import kernels
from triform.config import ModelConfig
from triform.models.encoder_decoder import EncoderDecoderModel
from triform.models.heads import LanguageModelHead
from triform.models.stack import Embeddings, Stack
from triform.models.stack_model import StackModel
from triform.nn import attention
from triform.nn.attention import CrossAttention, SelfAttention
from triform.nn.block import PostNormBlock, PreNormBlock
from triform.nn.feedforward import ACTIVATIONS, Activation, FeedForward, GatedFeedForward
from triform.nn.norm import make_norm
from triform.nn.position import LearnedPositions, RelativePositionBias, Rotary, RotaryScaling, SinusoidalPositions

Model = StackModel | EncoderDecoderModel


@dataclass(frozen=True)
class Parts:
    """How the parts compute: linear layers, attention (`nn.attention.attend`'s signature), dropout,
    activations (by name)."""

    linear: Callable[..., nn.Linear] = kernels.Linear
    attend: Callable[..., Tensor] = kernels.attend
    dropout: Callable[[float], nn.Module] = kernels.Dropout
    step: Callable[..., Tensor | None] | None = kernels.block_step  # a decoding step of a block
    stack_step: Callable[..., Tensor | None] | None = kernels.stack_step  # ... of a whole stack at once
    activation_of: Callable[[str], Activation] = kernels.ACTIVATIONS.__getitem__


KERNELS = Parts()  # this device's kernels: what build_model uses
# plain torch
TEXTBOOK = Parts(
    linear=nn.Linear,
    attend=attention.attend,
    dropout=nn.Dropout,
    step=None,
    stack_step=None,
    activation_of=ACTIVATIONS.__getitem__,
)


def build_model(config: ModelConfig, parts: Parts = KERNELS, *, initialise: bool = True) -> Model:
    """The model `config` describes, with weights initialised (unless `initialise` is False: weights
    that are about to be loaded, on the meta device); `parts` never changes the weights or their
    names, only the kernels that compute with them."""
    config.validate()
    token = nn.Embedding(config.vocab_size, config.d_model)
    if config.arch == "stack":
        stack = build_stack(config, parts, token, config.n_layers, cross=False, bidirectional_bias=True)
        model = StackModel(config, stack, build_head(config, parts, token))
    else:
        decoder_token = token if config.share_embeddings else nn.Embedding(config.vocab_size, config.d_model)
        encoder = build_stack(config, parts, token, config.n_layers, cross=False, bidirectional_bias=True)
        decoder = build_stack(config, parts, decoder_token, config.decoder_layers, cross=True, bidirectional_bias=False)
        model = EncoderDecoderModel(config, encoder, decoder, build_head(config, parts, decoder_token))
    if initialise:
        initialise_weights(model, config)
    return model


def build_stack(
    config: ModelConfig, parts: Parts, token: nn.Embedding, n_layers: int, *, cross: bool, bidirectional_bias: bool
) -> Stack:
    position = None
    if config.position in ("sinusoidal", "sinusoidal-halves"):
        position = SinusoidalPositions(config.d_model, config.max_len, halves=config.position == "sinusoidal-halves")
    elif config.position == "learned":
        position = LearnedPositions(config.d_model, config.max_len)
    embeddings = Embeddings(
        token,
        position,
        nn.Embedding(config.token_types, config.d_model) if config.token_types else None,
        scale=math.sqrt(config.d_model) if config.scale_embeddings else 1.0,
        norm=make_norm(config.norm, config.d_model, config.norm_eps) if config.embedding_norm else None,
        dropout=parts.dropout(config.dropout),
    )
    rotary = build_rotary(config) if config.position == "rotary" else None
    relative_bias = None
    if config.position == "relative":
        relative_bias = RelativePositionBias(
            config.n_heads, config.relative_buckets, config.relative_max_distance, bidirectional_bias
        )
    blocks = [build_block(config, parts, cross=cross, rotary=rotary) for _ in range(n_layers)]
    # Pre-norm leaves the residual stream unnormalised, so a last norm closes the stack (GPT-2 §2.3).
    final_norm = make_norm(config.norm, config.d_model, config.norm_eps) if config.norm_placement == "pre" else None
    return Stack(embeddings, blocks, final_norm, relative_bias, stack_step=parts.stack_step)


def build_rotary(config: ModelConfig) -> Rotary:
    scaling = None
    if config.rotary_scaling != "none":
        scaling = RotaryScaling(
            config.rotary_scaling,
            config.rotary_factor,
            config.rotary_original_max_len,
            config.rotary_low_frequency_factor,
            config.rotary_high_frequency_factor,
        )
    return Rotary(config.head_dim, config.max_len, config.rotary_base, scaling)


def build_block(config: ModelConfig, parts: Parts, *, cross: bool, rotary: Rotary | None):
    def heads() -> dict:
        norms = {}
        if config.qk_norm:
            norms = {
                name: make_norm(config.norm, config.head_dim, config.norm_eps) for name in ("query_norm", "key_norm")
            }
        return dict(
            bias=config.bias,
            qkv_bias=config.attention_bias,
            n_kv_heads=config.kv_heads,
            dropout=config.attention_dropout,
            scaled=config.scale_attention,
            linear=parts.linear,
            attend=parts.attend,
            **norms,
        )

    size = (config.d_model, config.n_heads, config.head_dim)
    feedforward_class = GatedFeedForward if config.gated else FeedForward
    n_sublayers = 3 if cross else 2
    block_class = PreNormBlock if config.norm_placement == "pre" else PostNormBlock
    return block_class(
        SelfAttention(*size, rotary=rotary, **heads()),
        feedforward_class(
            config.d_model,
            config.d_ff,
            config.activation,
            config.bias,
            linear=parts.linear,
            activation_of=parts.activation_of,
        ),
        [make_norm(config.norm, config.d_model, config.norm_eps) for _ in range(n_sublayers)],
        parts.dropout(config.dropout),
        cross_attention=CrossAttention(*size, **heads()) if cross else None,
        step=parts.step,
    )


def build_head(config: ModelConfig, parts: Parts, token: nn.Embedding) -> LanguageModelHead:
    projection = parts.linear(config.d_model, config.vocab_size, bias=False)
    if config.tie_embeddings:
        projection.weight = token.weight
        projection.gradient_in_rows = True  # the embedding's gradient is added to the projection's
    transform = None
    if config.output_transform:
        activation = parts.activation_of(config.activation)
        transform = nn.Sequential(
            parts.linear(config.d_model, config.d_model),
            _Activation(activation),
            make_norm(config.norm, config.d_model, config.norm_eps),
        )
    return LanguageModelHead(
        projection,
        transform=transform,
        bias=config.output_bias,
        scale=config.d_model**-0.5 if config.scale_output else 1.0,
    )


class _Activation(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


@torch.no_grad()
def initialise_weights(model: nn.Module, config: ModelConfig) -> None:
    """Normal(0, 0.02) weights and zero biases (GPT-2, BERT); the projections that write into the
    residual stream are scaled by 1/sqrt(2 · n_layers) (GPT-2 §2.3) so deep stacks start stable.
    With scaled embeddings the token table starts at std d_model^-0.5, so that after the
    sqrt(d_model) scale it has unit variance (as in fairseq's Transformer)."""
    n_layers = config.n_layers + (config.decoder_layers if config.arch == "encoder-decoder" else 0)
    modules = list(model.named_modules())
    for name, module in modules:
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * n_layers) if name.endswith((".out", ".down")) else 0.02
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    # Embeddings last: a tied output projection shares the token table, whose init is the one that counts.
    for name, module in modules:
        if isinstance(module, nn.Embedding):
            scaled = config.scale_embeddings and name.endswith("embeddings.token")
            nn.init.normal_(module.weight, std=config.d_model**-0.5 if scaled else 0.02)
