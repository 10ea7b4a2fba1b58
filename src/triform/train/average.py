"""Checkpoint averaging: the mean of the parameters of several checkpoints of one model, written as one
model folder. Vaswani et al. 2017 §6.1 average the last 5 checkpoints of a base model (written at
10-minute intervals) and the last 20 of a big one; the average sits near the centre of the region the
last steps wandered around, which scores better than any one of them.

A run keeps its last `train.keep_last` checkpoints (train/checkpoint.py), so averaging the last k
needs a run trained with `--train.keep_last` k or more. Averaging works on the files: the weights of
each folder's model.safetensors under their own names, so that any model folder (a pretrained body,
a fine-tuned task model with its head) averages the same way, and the folder written is the newest
checkpoint's, its weights replaced by the mean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from triform.checkpoint import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, read_config
from triform.errors import TriformError
from triform.io import atomic_dir
from triform.train import checkpoint as ckpt

# What must be the same in every folder averaged: the parameters mean the same thing only in one
# model, read with one vocabulary, trained for one task.
SAME_EXTRA = ("recipe", "task", "pooling")


def last_checkpoints(run_dir: str | os.PathLike, last: int) -> list[Path]:
    """The newest `last` complete checkpoints of a run, oldest first."""
    run_dir = Path(run_dir)
    if last < 1:
        raise TriformError(f"last: expected a positive number of checkpoints, got {last}")
    found = ckpt.checkpoints(run_dir)
    if not found:
        raise TriformError(f"{run_dir / ckpt.CHECKPOINTS}: no complete checkpoints; expected a run folder")
    if len(found) < last:
        names = ", ".join(p.name for p in found)
        raise TriformError(
            f"{run_dir / ckpt.CHECKPOINTS}: holds {len(found)} checkpoint(s) ({names}), fewer than the {last} "
            f"asked for; a run keeps its last train.keep_last checkpoints: train with --train.keep_last {last}"
        )
    return found[-last:]


def check_same_model(folders: list[Path]) -> dict:
    """Every folder's config.json describes the first one's model; returns the newest one's."""
    documents = [read_config(folder) for folder in folders]
    first, reference = documents[0], folders[0] / CONFIG_FILE
    for folder, document in zip(folders[1:], documents[1:]):
        where = folder / CONFIG_FILE
        for name in sorted(set(first.get("model", {})) | set(document.get("model", {}))):
            mine, theirs = document["model"].get(name), first["model"].get(name)
            if mine != theirs:
                raise TriformError(f"{where}: model.{name} is {mine!r}, but {reference} has {theirs!r}")
        if document.get("special_tokens") != first.get("special_tokens"):
            raise TriformError(f"{where}: special_tokens differ from those of {reference}")
        for name in SAME_EXTRA:
            if (document.get("extra") or {}).get(name) != (first.get("extra") or {}).get(name):
                raise TriformError(f"{where}: extra.{name} differs from that of {reference}")
        check_same_tokenizer(folders[0], folder)
    return documents[-1]


def check_same_tokenizer(first: Path, other: Path) -> None:
    paths = first / TOKENIZER_FILE, other / TOKENIZER_FILE
    present = [path.is_file() for path in paths]
    if present[0] != present[1]:
        missing = paths[1] if present[0] else paths[0]
        raise TriformError(f"{missing}: not found, but {paths[int(not present[0])]} exists")
    if present[0] and paths[0].read_bytes() != paths[1].read_bytes():
        raise TriformError(f"{paths[1]}: differs from {paths[0]}; averaged models must share one tokenizer")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise TriformError(f"{path}: not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise TriformError(f"{path}: unreadable safetensors file ({error})") from None


def mean_weights(folders: list[Path]) -> dict[str, torch.Tensor]:
    """The mean of every floating-point tensor, summed in float64 and rounded once to its own dtype
    (so the mean of two float32 checkpoints is exactly (a + b) / 2); other tensors must be equal."""
    first_path = folders[0] / WEIGHTS_FILE
    first = read_weights(folders[0])
    dtypes = {name: tensor.dtype for name, tensor in first.items()}
    sums = {name: tensor.double() if tensor.is_floating_point() else tensor for name, tensor in first.items()}
    for folder in folders[1:]:
        tensors, path = read_weights(folder), folder / WEIGHTS_FILE
        missing, unexpected = sorted(set(sums) - set(tensors)), sorted(set(tensors) - set(sums))
        if missing:
            raise TriformError(f"{path}: tensor {missing[0]!r} is missing (it is in {first_path})")
        if unexpected:
            raise TriformError(f"{path}: tensor {unexpected[0]!r} is not in {first_path}")
        for name, tensor in tensors.items():
            if tensor.shape != sums[name].shape:
                raise TriformError(
                    f"{path}: tensor {name!r} has shape {list(tensor.shape)}; {first_path} has {list(sums[name].shape)}"
                )
            if tensor.dtype != dtypes[name]:
                raise TriformError(f"{path}: tensor {name!r} is {tensor.dtype}; {first_path} has {dtypes[name]}")
            if tensor.is_floating_point():
                sums[name] += tensor.double()
            elif not torch.equal(tensor, sums[name]):
                raise TriformError(f"{path}: tensor {name!r} ({tensor.dtype}) differs from {first_path}'s")
    return {
        name: (total / len(folders)).to(dtypes[name]) if total.is_floating_point() else total
        for name, total in sums.items()
    }


def average_checkpoints(folders: list[str | os.PathLike], output: str | os.PathLike) -> Path:
    """Write the average of the model folders `folders` as the model folder `output` (atomically):
    the newest folder's config.json and tokenizer, the mean weights, and in extra.averaged which
    folders were averaged."""
    from safetensors.torch import save_file

    folders = [Path(folder) for folder in folders]
    if not folders:
        raise TriformError("checkpoints: expected at least one model folder to average")
    output = Path(output)
    if output.resolve() in {folder.resolve() for folder in folders}:
        raise TriformError(f"output: {output} is one of the checkpoints averaged; choose another folder")
    document = check_same_model(folders)
    weights = mean_weights(folders)
    extra = dict(document.get("extra") or {})
    extra["averaged"] = {"checkpoints": [str(folder) for folder in folders], "steps": steps_of(folders)}
    document = {**document, "extra": extra}
    with atomic_dir(output) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
        save_file(weights, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer = folders[-1] / TOKENIZER_FILE
        if tokenizer.is_file():
            (staging / TOKENIZER_FILE).write_bytes(tokenizer.read_bytes())
    return output


def steps_of(folders: list[Path]) -> list[int | None]:
    """The training step each folder was saved at, as its config.json records it."""
    return [(read_config(folder).get("extra") or {}).get("step") for folder in folders]
