"""AdamW and learning-rate schedules.

Weight decay applies to matrices only: biases, norm gains and other vectors are not decayed
(as in GPT-2 and BERT's own optimizers). The fused AdamW kernel is used where torch has one for
the device, and the multi-tensor (foreach) one otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from triform.train.config import OptimConfig


def build_optimizer(model: nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    decay, no_decay, seen = [], [], set()
    for parameter in model.parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    options = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)
    if fused_available(device, decay + no_decay):
        return torch.optim.AdamW(groups, fused=True, **options)
    return torch.optim.AdamW(groups, **options)


def fused_available(device: torch.device, parameters: list[torch.Tensor]) -> bool:
    """Fused AdamW exists for CUDA and, since torch 2.4, for CPU; not for sharded (DTensor) parameters."""
    if any(type(p) is not nn.Parameter for p in parameters):
        return False
    return device.type in ("cuda", "cpu")


def lr_factor(step: int, *, schedule: str, warmup: int, total: int, final_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Linear warmup over `warmup` steps, then: cosine or linear decay to `final_ratio` at `total`;
    `inverse-sqrt`, Vaswani et al. §5.3, decays as (warmup / step) ** 0.5 after the warmup, so the
    peak is reached at the end of the warmup as with the others; `constant` stays at the peak.
    """
    step += 1  # the first update uses a non-zero rate
    if warmup and step <= warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "inverse-sqrt":
        return math.sqrt(max(warmup, 1) / step)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - final_ratio) * progress
    if schedule == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"optim.schedule: expected cosine, linear, inverse-sqrt or constant, got {schedule!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int):
    def factor(step: int) -> float:
        return lr_factor(
            step,
            schedule=config.schedule,
            warmup=config.warmup_steps,
            total=total_steps,
            final_ratio=config.final_lr_ratio,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
