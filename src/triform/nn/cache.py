"""A static KV cache: buffers allocated once for the whole generation, written in place.

Every layer of a stack gets a `LayerCache` view; all layers share the cache's `length`, which the
stack advances once per forward pass. Cross-attention keys and values of an encoder-decoder are
stored once per source and reused at every step. The preallocated buffers, `update` and `reorder`
follow torchtune's static KV cache. The buffers hold the key/value heads only: under grouped-query
attention (Ainslie et al. 2023) the cache is n_heads / n_kv_heads times smaller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from triform.config import ModelConfig


class LayerCache:
    def __init__(self, owner: KVCache, keys: Tensor, values: Tensor):
        self.owner = owner
        self.keys = keys  # (B, n_kv_heads, capacity, d_head)
        self.values = values
        self.cross: tuple[Tensor, Tensor] | None = None
        # Where a fused decoding step finds these tensors and its masks, kept by kernels/fused_step.py
        # while they stay (None: found again at the next step).
        self.fused_places: tuple | None = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new keys and values after the cached ones; return all of them so far."""
        start = self.owner.length
        end = start + k.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KV cache holds {self.keys.shape[2]} positions; {end} were asked for")
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        d_head: int,
        capacity: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        shape = (batch_size, n_kv_heads, capacity, d_head)
        self.length = 0
        self.capacity = capacity
        # What a fused step of all the blocks at once prepared, kept by kernels/fused_step.py while
        # the layers' tensors and the masks stay (None: prepared again at the next step).
        self.fused_blocks: tuple | None = None
        self.layers = [
            LayerCache(
                self, torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)
            )
            for _ in range(n_layers)
        ]

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]

    def advance(self, n: int) -> None:
        self.length += n

    def rollback(self, n: int) -> None:
        """Forget the last `n` positions (a draft's rejected tokens): the next update overwrites them."""
        if not 0 <= n <= self.length:
            raise ValueError(f"KV cache holds {self.length} positions; cannot roll back {n}")
        self.length -= n

    def reorder(self, index: Tensor) -> None:
        """Keep the rows `index` (B_new,) of every buffer: beam search's survivors, or finished rows dropped."""
        for layer in self.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
            if layer.cross is not None:
                layer.cross = tuple(t.index_select(0, index) for t in layer.cross)


def cache_for(
    config: ModelConfig,
    n_layers: int,
    weight: Tensor,
    batch_size: int,
    capacity: int | None = None,
    dtype: torch.dtype | None = None,
) -> KVCache:
    """A cache for `n_layers` attention layers of a model with `config`, `capacity` positions (default
    max_len), on `weight`'s device and in its dtype unless `dtype` is given."""
    return KVCache(
        n_layers,
        batch_size,
        config.kv_heads,
        config.head_dim,
        capacity or config.max_len,
        dtype=dtype or weight.dtype,
        device=weight.device,
    )
