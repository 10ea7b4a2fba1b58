"""Ways to tell a Transformer where each token is.

Absolute positions are added to the token embeddings (sinusoidal, learned); rotary positions rotate
queries and keys inside attention, their frequencies optionally stretched for longer contexts;
relative position bias adds a learned scalar per head and distance bucket to the attention scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def check_positions(positions: Tensor, max_len: int) -> None:
    """A clear error for a position past the table, instead of an index error deep in the kernel.
    Skipped under torch.compile, where reading a tensor's value would break the graph."""
    if torch.compiler.is_compiling():
        return
    if positions.numel() and int(positions.max()) >= max_len:
        raise ValueError(
            f"position {int(positions.max())} is beyond the model's max_len {max_len}; "
            "shorten the input or build the model with a larger max_len"
        )


class SinusoidalPositions(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (Vaswani et al. 2017, §3.5).

    With `halves`, the same sines fill the first half of the vector and the cosines the second, as
    Marian (and tensor2tensor) lay them out; the two tables differ only by a permutation of columns.
    """

    def __init__(self, d_model: int, max_len: int, *, halves: bool = False):
        super().__init__()
        self.d_model, self.max_len, self.halves = d_model, max_len, halves
        # Not a parameter and not saved: it is a function of the config alone.
        self.register_buffer("table", self.computed_buffers()["table"], persistent=False)

    def computed_buffers(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """The table, computed on `device` (a model built on the meta device gets it so when loaded)."""
        d_model, max_len = self.d_model, self.max_len
        position = torch.arange(max_len, dtype=torch.float64, device=device)[:, None]
        steps = torch.arange(0, d_model, 2, dtype=torch.float64, device=device)
        frequency = torch.exp(steps * (-math.log(10000.0) / d_model))
        sines = torch.sin(position * frequency)  # (max_len, ceil(d_model / 2))
        cosines = torch.cos(position * frequency[: d_model // 2])  # (max_len, floor(d_model / 2))
        if self.halves:
            table = torch.cat([sines, cosines], dim=-1)
        else:
            table = torch.zeros(max_len, d_model, dtype=torch.float64, device=device)
            table[:, 0::2], table[:, 1::2] = sines, cosines
        return {"table": table.float()}

    def forward(self, positions: Tensor) -> Tensor:
        check_positions(positions, self.max_len)
        return self.table[positions]  # (B, T, d_model)


class LearnedPositions(nn.Module):
    """One trained vector per position (GPT, BERT)."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, positions: Tensor) -> Tensor:
        check_positions(positions, self.max_len)
        return self.embedding(positions)  # (B, T, d_model)


@dataclass(frozen=True)
class RotaryScaling:
    """How rotary frequencies are stretched so that a model reaches past the context it was trained at.

    - linear: position interpolation (Chen et al. 2023), every frequency divided by `factor`;
    - llama3: Llama 3.1's rule (Meta 2024): wavelengths longer than original_max_len / low_frequency_factor
      are interpolated, shorter than original_max_len / high_frequency_factor kept, and those between
      blended smoothly;
    - yarn: YaRN (Peng et al. 2023, §3.2): dimensions that turn fewer than beta_slow times over the original
      context are interpolated, more than beta_fast times kept, a linear ramp between; cos and sin are
      scaled by 0.1 ln(factor) + 1 (§3.4, the attention temperature).
    """

    kind: str  # linear, llama3, yarn
    factor: float
    original_max_len: int | None = None
    low_frequency_factor: float = 1.0
    high_frequency_factor: float = 4.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def apply(self, inverse_frequency: Tensor, d_head: int, base: float) -> tuple[Tensor, float]:
        """The scaled inverse frequencies (d_head / 2,) and the factor cos and sin are multiplied by."""
        if self.kind == "linear":
            return inverse_frequency / self.factor, 1.0
        if self.kind == "llama3":
            return self.llama3(inverse_frequency), 1.0
        if self.kind == "yarn":
            temperature = 0.1 * math.log(self.factor) + 1.0 if self.factor > 1 else 1.0
            return self.yarn(inverse_frequency, d_head, base), temperature
        raise ValueError(f"unknown rotary scaling {self.kind!r}")

    def llama3(self, inverse_frequency: Tensor) -> Tensor:
        wavelength = 2 * math.pi / inverse_frequency
        low, high = self.low_frequency_factor, self.high_frequency_factor
        smooth = (self.original_max_len / wavelength - low) / (high - low)
        blended = (1 - smooth) * inverse_frequency / self.factor + smooth * inverse_frequency
        scaled = torch.where(wavelength > self.original_max_len / low, inverse_frequency / self.factor, blended)
        return torch.where(wavelength < self.original_max_len / high, inverse_frequency, scaled)

    def yarn(self, inverse_frequency: Tensor, d_head: int, base: float) -> Tensor:
        def dimension(rotations: float) -> float:  # the dimension that turns `rotations` times over the context
            return d_head * math.log(self.original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(dimension(self.beta_fast)), 0)
        high = min(math.ceil(dimension(self.beta_slow)), d_head - 1)
        width = high - low if high != low else 1e-3
        ramp = (
            (torch.arange(d_head // 2, dtype=inverse_frequency.dtype, device=inverse_frequency.device) - low) / width
        ).clamp(0, 1)
        return inverse_frequency / self.factor * ramp + inverse_frequency * (1 - ramp)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021), rotating the two halves of each head's vector."""

    def __init__(self, d_head: int, max_len: int, base: float = 10000.0, scaling: RotaryScaling | None = None):
        super().__init__()
        self.d_head, self.max_len, self.base, self.scaling = d_head, max_len, base, scaling
        for name, table in self.computed_buffers().items():
            self.register_buffer(name, table, persistent=False)

    def computed_buffers(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """cos and sin of every position's angles, computed on `device`."""
        d_head, base = self.d_head, self.base
        inverse_frequency = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float64, device=device) / d_head))
        magnitude = 1.0
        if self.scaling is not None:
            inverse_frequency, magnitude = self.scaling.apply(inverse_frequency, d_head, base)
        positions = torch.arange(self.max_len, dtype=torch.float64, device=device)
        angles = positions[:, None] * inverse_frequency[None, :]
        angles = torch.cat([angles, angles], dim=-1)  # (max_len, d_head)
        return {"cos": (angles.cos() * magnitude).float(), "sin": (angles.sin() * magnitude).float()}

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate x of shape (B, heads, T, d_head) by the angles of positions (B, T)."""
        check_positions(positions, self.max_len)
        cos = self.cos[positions][:, None].to(x.dtype)  # (B, 1, T, d_head)
        sin = self.sin[positions][:, None].to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        rotated_half = torch.cat([-second, first], dim=-1)
        return x * cos + rotated_half * sin


class RelativePositionBias(nn.Module):
    """T5's learned bias per head and bucket of key - query distance (Raffel et al. 2020, §2.1).

    Distances up to `n_buckets / 2` (halved again when bidirectional) get a bucket each; larger ones
    share logarithmically wider buckets up to `max_distance`. The encoder looks both ways; a decoder
    only backwards, so its buckets all go to the past.
    """

    def __init__(self, n_heads: int, n_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.n_buckets = n_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(n_buckets, n_heads)

    def bucket(self, distance: Tensor) -> Tensor:
        n_buckets = self.n_buckets
        bucket = torch.zeros_like(distance)
        if self.bidirectional:
            n_buckets //= 2
            bucket = bucket + (distance > 0).long() * n_buckets
            distance = distance.abs()
        else:
            distance = (-distance).clamp(min=0)
        n_exact = n_buckets // 2
        logarithmic = (
            n_exact
            + (
                torch.log(distance.float().clamp(min=1) / n_exact)
                / math.log(self.max_distance / n_exact)
                * (n_buckets - n_exact)
            ).long()
        )
        logarithmic = logarithmic.clamp(max=n_buckets - 1)
        return bucket + torch.where(distance < n_exact, distance, logarithmic)

    def forward(self, n_queries: int, n_keys: int) -> Tensor:
        """Bias of shape (1, n_heads, n_queries, n_keys) for the last n_queries of n_keys slots."""
        device = self.embedding.weight.device
        query_slots = torch.arange(n_keys - n_queries, n_keys, device=device)[:, None]
        key_slots = torch.arange(n_keys, device=device)[None, :]
        buckets = self.bucket(key_slots - query_slots)  # (Tq, Tk)
        return self.embedding(buckets).permute(2, 0, 1)[None]  # (1, n_heads, Tq, Tk)
