"""Low-rank adaptation (LoRA, Hu et al. 2021): a frozen weight W plus a trained low-rank update.

    h = W x + (alpha / r) · B A dropout(x),   A: (r, d_in), B: (d_out, r)

A starts Gaussian and B at zero, so that the update BA is zero when training begins (§4.1); the
update is scaled by alpha / r so that changing r needs no new learning rate (§4.1). After training
BA can be added into W (§4.1, "no additional inference latency"): `merge_adapters`.

Written as modules injected in place of the projections, not with the `peft` library, because:
- triform fuses the query, key and value projections into one matrix (`query_key_value`), and a
  cross-attention's keys and values into another; peft adapts a linear layer as one matrix, so it
  could not give q, k and v adapters of their own (`--lora.targets q,v`), as a model with
  separate projections (Hu et al.'s GPT-3, Hugging Face's Llama) has them. Here each part of a
  fused projection has its own A and B of rank r, and the parts' updates are one product each way:
  x · [A_q; A_v]ᵀ, then · block_diag(B_q, 0_k, B_v)ᵀ for the rows of q, k and v;
- peft's adapter layers compute through `nn.Linear`, which would bypass triform's product kernels
  (kernels/linear.py); `LoraLinear` computes W x and both low-rank products with the kernel the
  frozen layer itself used;
- the state dict keeps the base model's names (`...query_key_value.weight`), so a base folder
  loads into an adapted model as it is and merging is a sum per matrix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.errors import ConfigError
from triform.kernels import Dropout, Linear
from triform.kernels.linear import linear as kernel_linear
from triform.nn.attention import CrossAttention, SelfAttention
from triform.nn.feedforward import FeedForward, GatedFeedForward

# What `--lora.targets` may name, and the parts each name stands for.
TARGET_NAMES = {"q": ("q",), "k": ("k",), "v": ("v",), "qkv": ("q", "k", "v"), "o": ("o",), "out": ("o",)}
TARGET_NAMES["ffn"] = ("ffn",)
DEFAULT_TARGETS = "qkv,out"  # every attention projection


@dataclass
class LoraOptions:
    """`--lora.*`: rank 0 trains every weight; a positive rank trains low-rank adapters only."""

    rank: int = 0
    alpha: float = 16.0  # the update is scaled by alpha / rank (Hu et al. 2021, §4.1)
    dropout: float = 0.0  # on the adapters' input, as peft's lora_dropout
    targets: str = DEFAULT_TARGETS  # comma-separated: q, k, v, o (= out), qkv, ffn

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def parts(self) -> set[str]:
        """The parts named by `targets`: a subset of q, k, v, o, ffn; an unknown name is an error."""
        names = [name.strip() for name in str(self.targets).split(",") if name.strip()]
        if not names:
            raise ConfigError(f"lora.targets: expected names among {', '.join(TARGET_NAMES)}, got {self.targets!r}")
        parts = set()
        for name in names:
            if name not in TARGET_NAMES:
                raise ConfigError(f"lora.targets: unknown target {name!r}; expected some of {', '.join(TARGET_NAMES)}")
            parts.update(TARGET_NAMES[name])
        return parts

    def check(self) -> None:
        if self.rank < 0:
            raise ConfigError(f"lora.rank: expected 0 (off) or a positive rank, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha: expected a positive scale, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: expected a value in [0, 1), got {self.dropout}")
        self.parts()

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": self.targets}


class LoraLinear(nn.Module):
    """A frozen linear layer whose output parts (q, k and v of a fused projection; one part
    otherwise) may each carry a low-rank update. `weight` and `bias` are the frozen layer's own
    parameters, under the same names; the adapters are `lora_a.<part>` (r, d_in) and
    `lora_b.<part>` (d_part, r)."""

    def __init__(self, base: nn.Linear, parts: list[tuple[str, int]], adapted: list[str], options: LoraOptions):
        super().__init__()
        self.base_class = type(base)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        # The product the frozen layer computed with: this device's kernel for kernels.Linear.
        self.product = kernel_linear if isinstance(base, Linear) else F.linear
        self.parts, self.adapted, self.options = parts, adapted, options
        self.rank, self.scale = options.rank, options.alpha / options.rank
        self.dropout = Dropout(options.dropout)
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        sizes = dict(parts)
        self.lora_a = nn.ParameterDict(
            {p: nn.Parameter(torch.empty(self.rank, self.in_features, **like)) for p in adapted}
        )
        self.lora_b = nn.ParameterDict({p: nn.Parameter(torch.empty(sizes[p], self.rank, **like)) for p in adapted})
        self.reset_adapters()

    @torch.no_grad()
    def reset_adapters(self) -> None:
        """A ~ N(0, 1/r²) and B = 0 (Hu et al. 2021, §4.1; peft's "gaussian" init): BA starts at zero."""
        for part in self.adapted:
            nn.init.normal_(self.lora_a[part], std=1.0 / self.rank)
            nn.init.zeros_(self.lora_b[part])

    def down(self) -> Tensor:
        """[A_p1; A_p2; ...]: (r · adapted parts, d_in)."""
        return (
            torch.cat([self.lora_a[p] for p in self.adapted]) if len(self.adapted) > 1 else self.lora_a[self.adapted[0]]
        )

    def up(self) -> Tensor:
        """block_diag of each part's B, zero rows for the parts left alone: (d_out, r · adapted parts)."""
        if len(self.parts) == 1:
            return self.lora_b[self.adapted[0]]
        blocks = [self.lora_b[p] if p in self.lora_b else self.weight.new_zeros(size, 0) for p, size in self.parts]
        return torch.block_diag(*blocks)

    def delta(self) -> Tensor:
        """(alpha / r) · BA, (d_out, d_in): what merging adds to the weight."""
        return (self.up() @ self.down()) * self.scale

    def forward(self, x: Tensor) -> Tensor:
        y = self.product(x, self.weight, self.bias)  # (..., d_out)
        low = self.product(self.dropout(x), self.down(), None)  # (..., r · parts)
        return y + self.product(low, self.up(), None) * self.scale

    def merged(self) -> nn.Linear:
        """The frozen layer's class with W + (alpha / r) BA as its weight."""
        with torch.device("meta"):
            layer = self.base_class(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            layer.weight = nn.Parameter(self.weight + self.delta().to(self.weight.dtype))
        layer.bias = self.bias
        return layer

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, rank {self.rank}, adapted {','.join(self.adapted)}"


def projections(model: nn.Module) -> list[tuple[nn.Module, str, list[tuple[str, int]]]]:
    """Every projection LoRA can adapt: (owner module, attribute, its output parts)."""
    found = []
    for module in model.modules():
        if isinstance(module, SelfAttention):
            found.append(
                (module, "query_key_value", [("q", module.inner), ("k", module.kv_inner), ("v", module.kv_inner)])
            )
        if isinstance(module, CrossAttention):
            found.append((module, "query", [("q", module.inner)]))
            found.append((module, "key_value", [("k", module.kv_inner), ("v", module.kv_inner)]))
        if isinstance(module, SelfAttention | CrossAttention):
            found.append((module, "out", [("o", module.out.out_features)]))
        if isinstance(module, FeedForward | GatedFeedForward):
            for name in ("gate", "up", "down"):
                if hasattr(module, name):
                    found.append((module, name, [("ffn", getattr(module, name).out_features)]))
    return found


def add_adapters(model: nn.Module, options: LoraOptions) -> list[str]:
    """Freeze every parameter of `model` and put LoRA adapters on the projections `options.targets`
    names; returns the names of the adapted layers. Call on the base model before wrapping it."""
    options.check()
    if has_adapters(model):
        raise ConfigError("lora: this model has adapters already; merge them (triform merge) before adding others")
    wanted = options.parts()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for owner, attribute, parts in projections(model):
        adapted = [name for name, _ in parts if name in wanted]
        if adapted:
            setattr(owner, attribute, LoraLinear(getattr(owner, attribute), parts, adapted, options))
    names = adapted_names(model)
    if not names:
        raise ConfigError(f"lora.targets: {options.targets!r} names no projection of this model")
    return names


def adapted_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, LoraLinear)]


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(module, LoraLinear) for module in model.modules())


def options_of(model: nn.Module) -> LoraOptions:
    """The options the adapters of `model` were added with."""
    return next(module.options for module in model.modules() if isinstance(module, LoraLinear))


def merge_adapters(model: nn.Module) -> nn.Module:
    """Replace every LoraLinear by a plain linear layer holding W + (alpha / r) BA; returns `model`."""
    for name in adapted_names(model):
        owner_name, _, attribute = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        setattr(owner, attribute, getattr(owner, attribute).merged())
    return model


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """What an adapter file holds: every trainable tensor (the adapters, a task head), by name."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def base_digest(model: nn.Module) -> str:
    """A fingerprint of the frozen weights the adapters were trained on: the first row of each adapted
    matrix, so that adapters put on other weights of the same shapes are refused, at no real cost."""
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            digest.update(name.encode())
            digest.update(module.weight[:1].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
