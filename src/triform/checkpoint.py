"""A model on disk: a folder with `config.json`, `model.safetensors` and, when known, `tokenizer.json`.

`config.json` holds the ModelConfig under "model", the special-token ids under "special_tokens",
and free-form "extra" fields (the objective a model was trained with, label sets of a task, ...).
Folders are written atomically (triform.io.atomic_dir): into a hidden staging folder first, then swapped
into place, so an interrupted save never leaves a half-written model where a complete one is expected.

Wherever a model folder is read, a run folder (`triform train --run_dir`) stands for the model it
holds (`model_folder`): its final model, else its best, else its newest checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from triform.config import ModelConfig
from triform.errors import TriformError
from triform.io import atomic_dir
from triform.models import build_model
from triform.nn.feedforward import join_gate_up
from triform.vocab import SpecialTokens, unpadded

FORMAT = "triform"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
ADAPTER_CONFIG = "adapter.json"  # an adapter folder's (models/adapters.py): LoRA adapters and their base
# A run folder's model folders (triform/train/checkpoint.py writes them): the final model, the best
# on validation, and the checkpoints, step-NNNNNNN each.
RUN_FINAL, RUN_BEST, RUN_CHECKPOINTS = "model", "best", "checkpoints"


def model_folder(path: str | os.PathLike, marks: tuple[str, ...] = (CONFIG_FILE,)) -> Path:
    """The model folder `path` names: itself, or in a run folder its final model, best, or newest
    checkpoint (a folder holding one of `marks`: an adapter folder's adapter.json, where adapters
    count); `path` itself where it is neither (reading it then says what is missing)."""
    path = Path(path)
    checkpoints = sorted((path / RUN_CHECKPOINTS).glob("step-*"), reverse=True)
    for candidate in (path, path / RUN_FINAL, path / RUN_BEST, *checkpoints):
        if any((candidate / mark).is_file() for mark in marks):
            return candidate
    return path


@dataclass
class Pretrained:
    model: nn.Module
    config: ModelConfig
    specials: SpecialTokens | None = None
    tokenizer: object | None = None  # a tokenizers.Tokenizer
    extra: dict = field(default_factory=dict)


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor (a tied output projection) kept once, under its first name."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen and tensor.numel():
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().contiguous().cpu()
    return tensors


def save_model(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    specials: SpecialTokens | None = None,
    tokenizer=None,
    extra: dict | None = None,
) -> Path:
    """Write the model folder `directory` atomically (an existing one is replaced only by a complete one)."""
    with atomic_dir(directory) as staging:
        write_model(model, staging, specials=specials, tokenizer=tokenizer, extra=extra)
    return Path(directory)


def write_model(
    model: nn.Module, folder: Path, *, specials: SpecialTokens | None = None, tokenizer=None, extra: dict | None = None
) -> None:
    """The files of a model folder, into `folder` (a staging folder: see save_model)."""
    from safetensors.torch import save_file

    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "special_tokens": specials.to_dict() if specials is not None else None,
        "extra": extra or {},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
    save_file(unique_state_dict(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(str(folder / TOKENIZER_FILE))


def read_config(directory: str | os.PathLike) -> dict:
    folder = model_folder(directory, (CONFIG_FILE, ADAPTER_CONFIG))
    refuse_adapters(folder)
    path = folder / CONFIG_FILE
    return read_document(path, FORMAT, FORMAT_VERSION, "config", f"a triform model folder with {CONFIG_FILE}")


def refuse_adapters(folder: Path) -> None:
    """Raise, saying what to do instead, where `folder` holds LoRA adapters and no model."""
    if (folder / CONFIG_FILE).is_file() or not (folder / ADAPTER_CONFIG).is_file():
        return
    try:
        base = (json.loads((folder / ADAPTER_CONFIG).read_text()).get("base") or {}).get("path")
    except (OSError, ValueError, AttributeError):
        base = None
    base = base or "BASE"
    raise TriformError(
        f"{folder} holds LoRA adapters, not a model: give their base ({base}) with --adapter {folder} where the "
        f"command takes one, or merge them: triform merge --model {base} --adapter {folder} --output MERGED"
    )


def read_document(path: Path, format_name: str, version: int, what: str, expected: str) -> dict:
    """A JSON document of triform's (a model's config.json, an adapter's adapter.json): its "format"
    checked, and a version newer than this triform reads refused; errors name the file and line."""
    if not path.is_file():
        raise TriformError(f"{path}: not found; expected {expected}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TriformError(f"{path}: line {error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(document, dict) or document.get("format") != format_name:
        raise TriformError(f'{path}: not a triform {what} (no "format": "{format_name}")')
    if document.get("version", 0) > version:
        raise TriformError(f"{path}: format version {document['version']} is newer than this triform reads")
    return document


def load_model(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Pretrained:
    directory = model_folder(directory)
    document = read_config(directory)
    config = ModelConfig.from_dict(document.get("model", {}), source=str(directory / CONFIG_FILE))
    model = load_built(config, directory / WEIGHTS_FILE, device)
    specials = document.get("special_tokens")
    tokenizer = None
    if (directory / TOKENIZER_FILE).is_file():
        from tokenizers import Tokenizer

        tokenizer = unpadded(Tokenizer.from_file(str(directory / TOKENIZER_FILE)))
    return Pretrained(
        model.eval(),
        config,
        SpecialTokens.from_dict(specials, source=str(directory / CONFIG_FILE)) if specials else None,
        tokenizer,
        document.get("extra", {}),
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, memory-mapped: nothing is read until a tensor is used, and
    the pages are the file's own (copy-on-write), not a second copy."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise TriformError(f"{path}: not found")
    try:
        with safe_open(str(path), framework="pt") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise TriformError(f"{path}: unreadable safetensors file ({error})") from None
    return join_gate_up(tensors)  # a folder written before gated feed-forwards had one gate_up matrix


def check_tensors(path: Path, tensors: dict, expected: dict) -> None:
    """Every expected tensor, none other, each of its expected shape; else an error naming the first culprit."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise TriformError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    if unexpected:
        raise TriformError(f"{path}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for name, wanted in expected.items():  # in the model's order, so the first culprit is named
        if tensors[name].shape != wanted.shape:
            raise TriformError(
                f"{path}: tensor {name!r} has shape {list(tensors[name].shape)}; the config expects "
                f"{list(wanted.shape)}"
            )


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy tensors from a safetensors file into `model`; any missing, unexpected or misshapen
    tensor is an error naming it, and the model is left untouched."""
    tensors = read_weights(path)
    check_tensors(path, tensors, unique_state_dict(model))
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in tensors.items():
            state[name].copy_(tensor)


def load_built(config: ModelConfig, path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model `config` describes with the weights of `path`, built on the meta device and given the
    file's memory-mapped tensors as its parameters (load_state_dict(assign=True)): no random init is
    drawn and no second copy of the weights is made. Buffers that are a function of the config
    (position tables) are computed on `device`."""
    with torch.device("meta"):
        model = build_model(config, initialise=False)
    tensors = read_weights(path)
    aliases = shared_names(model)
    check_tensors(path, tensors, {name: p for name, p in model.state_dict().items() if name not in aliases})
    device = torch.device(device)
    if device.type != "cpu":
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    for name, first in aliases.items():  # a tied output projection shares the tensor it was saved under
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, model.get_parameter(first))
    for module in model.modules():
        if hasattr(module, "computed_buffers"):
            for name, tensor in module.computed_buffers(device).items():
                setattr(module, name, tensor)
    return model


def shared_names(model: nn.Module) -> dict[str, str]:
    """Each parameter name that shares its tensor with an earlier one -> that earlier name."""
    first: dict[int, str] = {}
    aliases = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            aliases[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    return aliases
