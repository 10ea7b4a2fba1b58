"""How one family's Hugging Face tensors become triform's, and back, from a single list of rules.

Each `Rule` names a triform tensor, the Hugging Face tensor(s) it is made of and the reversible
reshaping between them (transposition, fusion of q/k/v, rows before position 0). Import and export
read the same rules in opposite directions, so the two cannot drift apart. Checks happen on the
Hugging Face side, against the tensors that exporting a freshly built model would write, so every
error names a tensor the user can find in their file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from triform.checkpoint import unique_state_dict
from triform.convert.files import ConversionError


@dataclass(frozen=True)
class Rule:
    ours: str  # the triform tensor
    theirs: tuple[str, ...]  # Hugging Face tensors, stacked along dim 0 in this order (q, k, v)
    transposed: bool = False  # GPT-2's Conv1D stores weights as (in, out), nn.Linear as (out, in)
    skip_rows: int = 0  # rows of a learned position table before position 0 (RoBERTa, BART)
    flat: bool = False  # a (1, n) Hugging Face tensor that triform holds as (n,) (BART's final_logits_bias)
    sizes: tuple[int, ...] = ()  # rows of each of `theirs` when they differ (q, k, v under grouped-query attention)


def rule(ours: str, *theirs: str, **options) -> Rule:
    return Rule(ours, tuple(theirs), **options)


def linear(ours: str, theirs: str, *, bias: bool = True, **options) -> list[Rule]:
    """A weight and, when the model has biases, its bias."""
    rules = [rule(f"{ours}.weight", f"{theirs}.weight", **options)]
    if bias:
        rules.append(rule(f"{ours}.bias", f"{theirs}.bias"))
    return rules


def fused(ours: str, theirs: list[str], *, bias: bool = True, sizes: tuple[int, ...] = ()) -> list[Rule]:
    """One triform projection made of several Hugging Face ones (q, k, v -> query_key_value), of
    `sizes` output rows each when they are not all the same."""
    rules = [rule(f"{ours}.weight", *(f"{name}.weight" for name in theirs), sizes=sizes)]
    if bias:
        rules.append(rule(f"{ours}.bias", *(f"{name}.bias" for name in theirs), sizes=sizes))
    return rules


def import_tensor(rule: Rule, tensors: dict[str, Tensor]) -> Tensor:
    parts = [tensors[name] for name in rule.theirs]
    if rule.transposed:
        parts = [part.t() if part.dim() == 2 else part for part in parts]
    tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    if rule.flat:
        tensor = tensor.reshape(-1)
    return tensor[rule.skip_rows :]


def export_tensor(rule: Rule, tensor: Tensor) -> dict[str, Tensor]:
    if rule.skip_rows:
        # The rows before position 0 are never read for a real token; Hugging Face starts them at zero.
        tensor = torch.cat([tensor.new_zeros(rule.skip_rows, *tensor.shape[1:]), tensor])
    if rule.flat:
        tensor = tensor[None]
    if rule.sizes:
        parts = tensor.split(list(rule.sizes), dim=0)
    else:
        parts = tensor.chunk(len(rule.theirs), dim=0) if len(rule.theirs) > 1 else (tensor,)
    if rule.transposed:
        parts = tuple(part.t() if part.dim() == 2 else part for part in parts)
    return {name: part.contiguous() for name, part in zip(rule.theirs, parts)}


def check_coverage(rules: list[Rule], model: nn.Module) -> dict[str, Tensor]:
    """The model's tensors by name; every one must have exactly one rule (a bug of ours otherwise)."""
    state = unique_state_dict(model)
    covered = [r.ours for r in rules]
    missing = sorted(set(state) - set(covered))
    extra = sorted(set(covered) - set(state))
    if missing or extra or len(covered) != len(set(covered)):
        raise AssertionError(f"conversion rules do not match the model: uncovered {missing}, unknown {extra}")
    return state


def export_state(rules: list[Rule], model: nn.Module) -> dict[str, Tensor]:
    state = check_coverage(rules, model)
    tensors: dict[str, Tensor] = {}
    for r in rules:
        tensors.update(export_tensor(r, state[r.ours]))
    return tensors


def import_state(rules: list[Rule], model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Copy Hugging Face `tensors` into `model`. A missing or misshapen tensor is an error naming it,
    found before anything is copied."""
    expected = export_state(rules, model)
    for name, wanted in expected.items():
        if name not in tensors:
            n_missing = sum(other not in tensors for other in expected)
            raise ConversionError(f"{source}: tensor {name!r} is missing ({n_missing} missing in all)")
        if tuple(tensors[name].shape) != tuple(wanted.shape):
            raise ConversionError(
                f"{source}: tensor {name!r} has shape {list(tensors[name].shape)}; "
                f"config.json describes {list(wanted.shape)}"
            )
        if not tensors[name].is_floating_point():
            raise ConversionError(f"{source}: tensor {name!r} holds {tensors[name].dtype}; expected floating point")
    state = model.state_dict()
    with torch.no_grad():
        for r in rules:
            state[r.ours].copy_(import_tensor(r, tensors))


def consumed_names(rules: list[Rule]) -> set[str]:
    return {name for r in rules for name in r.theirs}
