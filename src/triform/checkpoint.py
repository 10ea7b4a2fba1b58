"""A model on disk: a folder with `config.json`, `model.safetensors` and, when known, `tokenizer.json`.

`config.json` holds the ModelConfig under "model", the special-token ids under "special_tokens",
and free-form "extra" fields (the objective a model was trained with, label sets of a task, ...).
Folders are written atomically (triform.io.atomic_dir): into a hidden staging folder first, then swapped
into place, so an interrupted save never leaves a half-written model where a complete one is expected.
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
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise TriformError(f"{path}: not found; expected a triform model folder with {CONFIG_FILE}")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TriformError(f"{path}: line {error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TriformError(f'{path}: not a triform config (no "format": "{FORMAT}")')
    if document.get("version", 0) > FORMAT_VERSION:
        raise TriformError(f"{path}: format version {document['version']} is newer than this triform reads")
    return document


def load_model(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Pretrained:
    directory = Path(directory)
    document = read_config(directory)
    config = ModelConfig.from_dict(document.get("model", {}), source=str(directory / CONFIG_FILE))
    with torch.device(device):
        model = build_model(config)
    load_weights(model, directory / WEIGHTS_FILE)
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


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy tensors from a safetensors file into `model`; any missing, unexpected or misshapen
    tensor is an error naming it, and the model is left untouched."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise TriformError(f"{path}: not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise TriformError(f"{path}: unreadable safetensors file ({error})") from None
    expected = unique_state_dict(model)
    tensors = join_gate_up(tensors)  # a folder written before gated feed-forwards had one gate_up matrix
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
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in tensors.items():
            state[name].copy_(tensor)
