"""The KV cache of a running batch, in slots: row r of the batch is slot r of every buffer.

Rows are aligned on the right: the keys of every row end at the same write position `width`, and a
row that joined later than the others has left padding before its prompt, masked as the padding of a
static batch is (nn/masks.py; positions count a row's own tokens only). So a row's scores do not
depend on the rows beside it, which is what lets a request join a running batch and give what it
gives alone.

The running rows are always the first n slots (a row that leaves is replaced by the last one), so
that a step reads views of the buffers, never copies. When `width` reaches the capacity, the
padding columns that all rows share on the left are dropped; when a prompt is longer than `width`,
every row is shifted right to make room. An encoder-decoder's cross-attention keys and values sit in
per-slot buffers padded on the right to `max_len` source tokens, masked past each source's end.
"""

from __future__ import annotations

import torch
from torch import Tensor

from triform.nn.cache import KVCache, LayerCache


class SlotView:
    """The interface of a KVCache (`length`, `layers`, `advance`) over some rows of the slot buffers,
    without copying them: what one forward pass of the running rows writes into."""

    def __init__(self, cache: KVCache, rows: slice, length: int, cross_width: int):
        self.length, self.capacity = length, cache.capacity
        self.fused_blocks = None  # a view lasts one pass: nothing for a fused step to keep (nn/cache.py)
        self.layers = []
        for layer in cache.layers:
            view = LayerCache(self, layer.keys[rows], layer.values[rows])
            if layer.cross is not None:
                view.cross = (layer.cross[0][rows, :, :cross_width], layer.cross[1][rows, :, :cross_width])
            self.layers.append(view)

    def __getitem__(self, layer: int) -> LayerCache:
        return self.layers[layer]

    def advance(self, n: int) -> None:
        self.length += n


class SlotCache:
    """Preallocated buffers for `slots` rows of `capacity` positions; `mask` (slots, capacity) is True
    at the real (non-padding) positions of each row."""

    def __init__(self, model, slots: int, capacity: int, *, cross: bool):
        self.cache = model.new_cache(slots, capacity=capacity)
        device = self.cache.layers[0].keys.device
        self.mask = torch.zeros(slots, capacity, dtype=torch.bool, device=device)
        self.start = [0] * slots  # first real position of each row
        self.prefix_end = torch.zeros(slots, dtype=torch.long, device=device)  # the prefix pattern's end, in slots
        self.width = 0  # the shared write position
        self.n = 0  # running rows: slots 0 .. n-1
        self.cross_width = 0
        self.source_mask = None
        if cross:
            max_len = model.config.max_len
            for layer in self.cache.layers:
                shape = (slots, *layer.keys.shape[1:2], max_len, layer.keys.shape[-1])
                layer.cross = tuple(torch.zeros(shape, dtype=layer.keys.dtype, device=device) for _ in range(2))
            self.source_mask = torch.zeros(slots, max_len, dtype=torch.bool, device=device)

    @property
    def slots(self) -> int:
        return self.mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.cache.capacity

    def view(self, rows: slice | None = None) -> SlotView:
        return SlotView(self.cache, rows or slice(0, self.n), self.width, self.cross_width)

    # --- joining and leaving ------------------------------------------------------------------------
    def make_room(self, length: int) -> None:
        """Let a row of `length` cached positions end at `width`: shift every row right if needed."""
        if length > self.width:
            self.shift(length - self.width)

    def place(self, slot: int, session_cache: KVCache, row: int, length: int, source_length: int = 0) -> None:
        """Copy row `row` of a prefilled session's cache (its last `length` positions are real) into
        `slot`, ending at `width`; an encoder-decoder's cross keys and values come along."""
        end, begin = self.width, self.width - length
        for mine, theirs in zip(self.cache.layers, session_cache.layers):
            width = theirs.keys.shape[2]
            mine.keys[slot, :, begin:end] = theirs.keys[row, :, width - length : width]
            mine.values[slot, :, begin:end] = theirs.values[row, :, width - length : width]
            if mine.cross is not None:
                for buffer, source in zip(mine.cross, theirs.cross):
                    buffer[slot, :, :source_length] = source[row, :, :source_length]
        self.mask[slot] = False
        self.mask[slot, begin:end] = True
        self.start[slot] = begin
        self.prefix_end[slot] = end
        if self.source_mask is not None:
            self.source_mask[slot] = False
            self.source_mask[slot, :source_length] = True
            self.cross_width = max(self.cross_width, source_length)

    def move(self, source: int, target: int) -> None:
        """Row `source` into slot `target` (the last row filling a freed slot)."""
        for layer in self.cache.layers:
            for buffer in (layer.keys, layer.values):
                buffer[target, :, : self.width] = buffer[source, :, : self.width]
            if layer.cross is not None:
                for buffer in layer.cross:
                    buffer[target, :, : self.cross_width] = buffer[source, :, : self.cross_width]
        self.mask[target] = self.mask[source]
        self.start[target] = self.start[source]
        self.prefix_end[target] = self.prefix_end[source]
        if self.source_mask is not None:
            self.source_mask[target] = self.source_mask[source]

    def emptied(self) -> None:
        """No row runs: the next one starts from an empty cache."""
        self.width = self.cross_width = 0

    # --- keeping the width in bounds ------------------------------------------------------------------
    def shift(self, delta: int) -> None:
        """Move every running row `delta` positions right (delta > 0) or left (< 0, dropping padding)."""
        n, width = self.n, self.width
        if delta > 0 and width + delta > self.capacity:
            raise ValueError(f"KV cache slots hold {self.capacity} positions; {width + delta} were asked for")
        source, target = (
            (slice(0, width), slice(delta, width + delta))
            if delta > 0
            else (slice(-delta, width), slice(0, width + delta))
        )
        for layer in self.cache.layers:
            for buffer in (layer.keys, layer.values):
                buffer[:n, :, target] = buffer[:n, :, source].clone()
        moved = self.mask[:n, source].clone()
        self.mask[:n] = False
        self.mask[:n, target] = moved
        self.start[:n] = [s + delta for s in self.start[:n]]
        self.prefix_end[:n] += delta
        self.width += delta

    def compact(self, *, need: int = 1) -> None:
        """Drop the padding that every running row has on the left when the next `need` positions would
        not fit, or when it is more than half the width (it costs every step attention over it)."""
        shared = min(self.start[: self.n], default=0)
        if shared and (self.width + need > self.capacity or 2 * shared > self.width):
            self.shift(-shared)
        if self.width + need > self.capacity:
            raise ValueError(f"KV cache slots hold {self.capacity} positions; {self.width + need} were asked for")

    def step_mask(self, rows: slice) -> Tensor:
        """The padding mask of one decoding step for `rows`: their real positions and the new one."""
        self.mask[rows, self.width] = True
        return self.mask[rows, : self.width + 1]
