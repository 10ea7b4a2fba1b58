"""Transformer blocks: attention and feed-forward sublayers, each inside a residual connection.

Post-norm places the norm after the residual sum, as in Vaswani et al. 2017 (§3.1) and BERT;
pre-norm places it before the sublayer, as in GPT-2 (Radford et al. 2019, §2.3), which trains
deeper stacks without warmup tricks. The two differ only in `residual`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn

from triform.nn.attention import CrossAttention, SelfAttention

if TYPE_CHECKING:
    from triform.nn.cache import LayerCache


@dataclass
class AttentionContext:
    """What every layer of a stack needs to know about one forward pass."""

    mask: Tensor | None = None  # self-attention visibility, True where allowed
    is_causal: bool = False  # mask is plainly lower-triangular: the fused kernel may be used
    bias: Tensor | None = None  # relative position bias, (1, n_heads, T, T_keys)
    positions: Tensor | None = None  # (B, T), for rotary positions
    memory: Tensor | None = None  # encoder output, for cross-attention
    memory_mask: Tensor | None = None  # (B, 1, 1 or T, S), True at the source tokens a query reads


# (block, x, context, cache) -> the block's output, or None
Step = Callable[["Block", Tensor, AttentionContext, "LayerCache"], Tensor | None]


class Block(nn.Module):
    def __init__(
        self,
        self_attention: SelfAttention,
        feedforward: nn.Module,
        norms: list[nn.Module],
        dropout: nn.Module,
        cross_attention: CrossAttention | None = None,
        step: Step | None = None,
    ):
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.feedforward = feedforward
        self.norms = nn.ModuleList(norms)  # one per sublayer, in order
        self.dropout = dropout  # on each sublayer's output, Vaswani §5.4
        # A decoding step computed another way than by the modules (models/build.py hands in
        # triform.kernels.block_step); it answers None where the modules are to compute the step.
        self.step = step

    def residual(self, x: Tensor, sublayer: Callable[[Tensor], Tensor], norm: nn.Module) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, context: AttentionContext, cache: LayerCache | None = None) -> Tensor:
        if self.step is not None and cache is not None:
            y = self.step(self, x, context, cache)
            if y is not None:
                return y
        return self.forward_modules(x, context, cache)

    def forward_modules(self, x: Tensor, context: AttentionContext, cache: LayerCache | None = None) -> Tensor:
        def self_attend(h: Tensor) -> Tensor:
            return self.self_attention(
                h,
                mask=context.mask,
                is_causal=context.is_causal,
                bias=context.bias,
                positions=context.positions,
                cache=cache,
            )

        def cross_attend(h: Tensor) -> Tensor:
            return self.cross_attention(h, context.memory, mask=context.memory_mask, cache=cache)

        x = self.residual(x, self_attend, self.norms[0])
        if self.cross_attention is not None:
            x = self.residual(x, cross_attend, self.norms[1])
        return self.residual(x, self.feedforward, self.norms[-1])


class PreNormBlock(Block):
    def residual(self, x, sublayer, norm):
        return x + self.dropout(sublayer(norm(x)))


class PostNormBlock(Block):
    def residual(self, x, sublayer, norm):
        return norm(x + self.dropout(sublayer(x)))


def compile_blocks(model: nn.Module, **options) -> int:
    """torch.compile every block of `model` on its own, in place (regional compilation): the
    element-wise work around the products (norms, activations, dropout, residual sums, bf16 casts)
    fused by inductor, one graph per distinct block compiled once and reused by the others, the
    state dict unchanged. Returns the number of blocks."""
    blocks = [module for module in model.modules() if isinstance(module, Block)]
    for block in blocks:
        block.compile(**options)
    return len(blocks)
