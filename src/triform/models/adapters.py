"""Adapters on disk: a folder with `adapter.safetensors` (every trainable tensor: the LoRA matrices
and, for a task, its head) and `adapter.json` (which base model they were trained on, the LoRA
options, and the "extra" a model folder would record), written atomically.

Loading puts the adapters on a base model folder's model: the base's configuration must be the one
recorded (the first field that differs is named) and its adapted weights the same (a digest of
them), so that adapters trained on one model are never silently added to another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from triform.checkpoint import (
    ADAPTER_CONFIG,
    TOKENIZER_FILE,
    Pretrained,
    load_model,
    model_folder,
    read_document,
    save_model,
)
from triform.errors import TriformError
from triform.io import atomic_dir
from triform.models.lora import (
    LoraOptions,
    adapted_names,
    add_adapters,
    base_digest,
    merge_adapters,
    options_of,
    trainable_state,
)

ADAPTER_FORMAT, ADAPTER_VERSION = "triform-adapter", 1
ADAPTER_WEIGHTS = "adapter.safetensors"  # beside ADAPTER_CONFIG (triform/checkpoint.py)


def is_adapter_folder(directory: str | os.PathLike) -> bool:
    return (Path(directory) / ADAPTER_CONFIG).is_file()


def write_adapter(
    model: nn.Module, folder: Path, *, base: str | None = None, specials=None, tokenizer=None, extra=None
) -> None:
    """The files of an adapter folder for the adapted `model`, into `folder` (a staging folder: see
    save_adapter); `base` is the folder of the base model, as the adapters' record of it."""
    from safetensors.torch import save_file

    document = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "base": {"path": str(base) if base else None, "model": model.config.to_dict(), "digest": base_digest(model)},
        "lora": options_of(model).to_dict(),
        "adapted": adapted_names(model),
        "special_tokens": specials.to_dict() if specials is not None else None,
        "extra": extra or {},
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(document, indent=2) + "\n")
    save_file(trainable_state(model), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(str(folder / TOKENIZER_FILE))


def save_adapter(model: nn.Module, directory: str | os.PathLike, **kwargs) -> Path:
    with atomic_dir(directory) as staging:
        write_adapter(model, staging, **kwargs)
    return Path(directory)


def read_adapter(directory: str | os.PathLike) -> dict:
    path = model_folder(directory, (ADAPTER_CONFIG,)) / ADAPTER_CONFIG  # a run folder: the adapters it holds
    expected = "an adapter folder (adapter.json, adapter.safetensors)"
    return read_document(path, ADAPTER_FORMAT, ADAPTER_VERSION, "adapter", expected)


def adapter_options(document: dict, source: str) -> LoraOptions:
    values = document.get("lora") or {}
    try:
        options = LoraOptions(**values)
        options.check()
    except (TypeError, TriformError) as error:
        raise TriformError(f"{source}: lora: {error}") from None
    return options


def check_base(document: dict, model: nn.Module, directory: Path, base_name: str) -> None:
    """The base must be the model the adapters were trained on: the same configuration, field by field."""
    source = directory / ADAPTER_CONFIG
    recorded = (document.get("base") or {}).get("model") or {}
    trained_on = (document.get("base") or {}).get("path") or "another model"
    for name, value in model.config.to_dict().items():
        if name in recorded and recorded[name] != value:
            raise TriformError(
                f"{source}: base model.{name} is {recorded[name]!r}, but {base_name} has {value!r}; "
                f"these adapters were trained on {trained_on}"
            )


def put_adapters(model: nn.Module, directory: str | os.PathLike, *, base_name: str = "the base model") -> dict:
    """Add the adapters of the folder `directory` to `model` (a base model, or a task model around
    one) and load their tensors; returns the adapter.json document. Errors name the field or tensor."""
    directory = model_folder(directory, (ADAPTER_CONFIG,))
    document = read_adapter(directory)
    check_base(document, model, directory, base_name)
    add_adapters(model, adapter_options(document, str(directory / ADAPTER_CONFIG)))
    digest = (document.get("base") or {}).get("digest")
    if digest and digest != base_digest(model):
        raise TriformError(
            f"{directory / ADAPTER_CONFIG}: base digest {digest} differs from {base_name}'s {base_digest(model)}: "
            "the same configuration with other weights; load the base the adapters were trained on"
        )
    load_trainable(model, directory / ADAPTER_WEIGHTS)
    return document


def load_trainable(model: nn.Module, path: Path) -> None:
    """Copy an adapter file's tensors into `model`: every adapter matrix of the model must be there,
    and every tensor there (the adapters, a task head) must be a parameter of the model's shape; all
    or none."""
    from safetensors import SafetensorError, safe_open

    parameters = dict(model.named_parameters())
    adapters = [name for name in parameters if ".lora_a." in name or ".lora_b." in name]
    try:
        with safe_open(str(path), framework="pt") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise TriformError(f"{path}: unreadable adapter weights ({error})") from None
    missing, unexpected = sorted(set(adapters) - set(tensors)), sorted(set(tensors) - set(parameters))
    if missing:
        raise TriformError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    if unexpected:
        raise TriformError(f"{path}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for name, tensor in tensors.items():
        if tensor.shape != parameters[name].shape:
            raise TriformError(
                f"{path}: tensor {name!r} has shape {list(tensor.shape)}; expected {list(parameters[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in tensors.items():
            parameters[name].copy_(tensor)


def load_adapted(base: str | os.PathLike, adapter: str | os.PathLike, *, device: str = "cpu") -> Pretrained:
    """A base model folder with the adapters of `adapter` on it, in evaluation mode; its "extra" is
    the base's, updated by the adapters' (their recipe, when they trained another objective)."""
    loaded = load_model(base, device=device)
    document = put_adapters(loaded.model, adapter, base_name=f"{base}/config.json")
    loaded.model.to(device).eval()
    loaded.extra = {**loaded.extra, **{k: v for k, v in (document.get("extra") or {}).items() if k == "recipe"}}
    return loaded


def merge_folder(base: str | os.PathLike, adapter: str | os.PathLike, output: str | os.PathLike) -> Path:
    """`triform merge`: the base with the adapters added into its weights, as a plain model folder."""
    loaded = load_adapted(base, adapter)
    merge_adapters(loaded.model)
    extra = {**loaded.extra, "merged_adapter": str(adapter)}
    return save_model(loaded.model, output, specials=loaded.specials, tokenizer=loaded.tokenizer, extra=extra)
