"""Hugging Face model folders on disk: `config.json` and weights in, a complete folder out.

Weights are read from `model.safetensors`, a sharded `model.safetensors.index.json`, or PyTorch's
`pytorch_model.bin` (loaded with `weights_only=True`, so a pickle can hold tensors and nothing that
runs). Weights larger than a shard size are written as Hugging Face shards them: files of at most that
size, `model-00001-of-00003.safetensors` ..., and `model.safetensors.index.json` naming the file of
each tensor. Folders are written into a hidden sibling first and swapped into place
(triform.io.atomic_dir), so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from triform.errors import TriformError
from triform.io import atomic_dir

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PYTORCH, PYTORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
SHARD = "model-{index:05d}-of-{count:05d}.safetensors"
DEFAULT_SHARD_SIZE = "5GB"  # the Hub's advice for one file, and transformers 4's default
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


class ConversionError(TriformError, ValueError):
    """A Hugging Face folder that cannot be read, or a model that a Hugging Face family cannot express."""


class ConversionWarning(UserWarning):
    """Something a conversion left out that the user may want to know about."""


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"{path}: not found")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}: line {error.lineno}: invalid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise ConversionError(f"{path}: not UTF-8 text") from None
    if not isinstance(document, dict):
        raise ConversionError(f"{path}: expected a JSON object, got {type(document).__name__}")
    return document


def read_hf_config(directory: Path) -> dict:
    path = directory / CONFIG
    if not directory.is_dir():
        raise ConversionError(f"{directory}: not a folder; triform reads local Hugging Face folders, with no download")
    config = read_json(path)
    if config.get("format") == "triform":
        raise ConversionError(f"{path}: this is a triform model folder, not a Hugging Face one")
    if not isinstance(config.get("model_type"), str):
        raise ConversionError(f'{path}: no "model_type" field; expected a Hugging Face model config')
    return config


def read_hf_weights(directory: Path) -> tuple[dict[str, Tensor], str]:
    """All tensors of the folder, and the name of the file (or index) they came from."""
    for name, reader in ((SAFETENSORS, read_safetensors), (PYTORCH, read_pytorch)):
        if (directory / name).is_file():
            return reader(directory / name), name
    for name, reader in ((SAFETENSORS_INDEX, read_safetensors), (PYTORCH_INDEX, read_pytorch)):
        if (directory / name).is_file():
            return read_sharded(directory / name, reader), name
    raise ConversionError(f"{directory}: no weights; expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH}")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ConversionError(f"{path}: unreadable safetensors file ({one_line(error)})") from None


def read_pytorch(path: Path) -> dict[str, Tensor]:
    try:
        tensors = torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise ConversionError(f"{path}: unreadable PyTorch weights file ({one_line(error)})") from None
    if not isinstance(tensors, dict) or not all(isinstance(t, Tensor) for t in tensors.values()):
        raise ConversionError(f"{path}: expected a mapping of tensor names to tensors")
    return tensors


def read_sharded(index_path: Path, reader) -> dict[str, Tensor]:
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConversionError(f'{index_path}: no "weight_map" object')
    tensors: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = index_path.parent / shard
        if not path.is_file():
            raise ConversionError(f"{index_path}: shard {shard!r} is missing")
        tensors.update(reader(path))
    return tensors


def check_destination(source: Path, destination: Path, overwrite: bool) -> None:
    if destination.resolve() == source.resolve():
        raise ConversionError(f"{destination}: the output folder must differ from the input folder")
    if destination.exists() and not overwrite:
        raise ConversionError(f"{destination}: already exists; pass overwrite (--overwrite) to replace it")
    if destination.exists() and not destination.is_dir():
        raise ConversionError(f"{destination}: exists and is not a folder")


def parse_size(value: int | str, name: str = "--max-shard-size") -> int:
    """Bytes from 5000000, "5GB" (10^9 bytes each) or "5GiB" (2^30), as transformers reads max_shard_size."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", str(value), re.IGNORECASE)
        if match is None:
            raise ConversionError(f"{name}: expected a size such as 5GB, 500MB or 2GiB, got {value!r}")
        size = int(float(match.group(1)) * UNITS[(match.group(2) or "").upper()])
    if size < 1:
        raise ConversionError(f"{name}: expected a positive size, got {value!r}")
    return size


def shards(tensors: dict[str, Tensor], max_bytes: int) -> list[dict[str, Tensor]]:
    """Tensors in order, a new shard whenever the next would take one past `max_bytes`; a tensor larger
    than that has a shard to itself, as in huggingface_hub's split_state_dict_into_shards."""
    groups: list[dict[str, Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        n_bytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + n_bytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = tensor
        size += n_bytes
    return groups


def write_weights(staging: Path, tensors: dict[str, Tensor], max_shard_size: int | str) -> None:
    from safetensors.torch import save_file

    # Fresh copies: safetensors refuses tensors that share memory (views of one fused q/k/v matrix).
    copies = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    groups = shards(copies, parse_size(max_shard_size))
    if len(groups) == 1:
        save_file(copies, str(staging / SAFETENSORS), metadata={"format": "pt"})
        return
    weight_map = {}
    for index, group in enumerate(groups, start=1):
        name = SHARD.format(index=index, count=len(groups))
        save_file(group, str(staging / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, name))
    total = sum(tensor.numel() * tensor.element_size() for tensor in copies.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (staging / SAFETENSORS_INDEX).write_text(to_json(index), encoding="utf-8")


def write_folder(
    directory: Path,
    tensors: dict[str, Tensor],
    files: dict[str, str | bytes],
    *,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> Path:
    """Write the weights (`model.safetensors`, or shards of at most `max_shard_size` and their index)
    and the other files into `directory`, atomically."""
    parse_size(max_shard_size)  # a bad size is an error before anything is written
    with atomic_dir(directory) as staging:
        write_weights(staging, tensors, max_shard_size)
        for name, content in files.items():
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            (staging / name).write_bytes(data)
    return directory


def to_json(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def is_hf_folder(directory: str | os.PathLike) -> bool:
    """A folder whose config.json is a Hugging Face config (it names a model_type, not triform's format)."""
    path = Path(directory) / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") != "triform" and "model_type" in config
