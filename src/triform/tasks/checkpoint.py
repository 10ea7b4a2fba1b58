"""Fine-tuned models on disk: an ordinary model folder whose config.json "extra" holds the task
(its name, how it reads the body, its label set), so that prediction decides exactly as training did."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from triform.checkpoint import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    load_model,
    load_weights,
    model_folder,
    read_config,
    save_model,
)
from triform.config import ModelConfig
from triform.errors import TriformError
from triform.models import build_model
from triform.models.adapters import ADAPTER_CONFIG, is_adapter_folder, put_adapters, read_adapter
from triform.models.lora import merge_adapters
from triform.tasks import Task, task_from_state
from triform.vocab import SpecialTokens, unpadded


def save_task_model(model: nn.Module, task: Task, directory: str | os.PathLike, *, extra: dict | None = None) -> Path:
    return save_model(
        model,
        directory,
        specials=task.framing.specials,
        tokenizer=task.tokenizer,
        extra={**(extra or {}), "task": task.state()},
    )


def load_task_model(directory: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Task, dict]:
    """(model, task, extra) of a folder written by `save_task_model`, or of an adapter folder of a
    task (its adapters and head on the base model it names)."""
    import torch

    directory = model_folder(directory, (CONFIG_FILE, ADAPTER_CONFIG))
    if is_adapter_folder(directory):
        return load_task_adapter(directory, device)
    document = read_config(directory)
    extra = document.get("extra") or {}
    if "task" not in extra:
        raise TriformError(
            f"{directory / CONFIG_FILE}: not a fine-tuned model (no task); fine-tune one with `triform finetune`"
        )
    config = ModelConfig.from_dict(document["model"], source=str(directory / CONFIG_FILE))
    if not (directory / TOKENIZER_FILE).is_file():
        raise TriformError(f"{directory / TOKENIZER_FILE}: not found; a fine-tuned model keeps its tokenizer")
    from tokenizers import Tokenizer

    tokenizer = unpadded(Tokenizer.from_file(str(directory / TOKENIZER_FILE)))
    specials = SpecialTokens.from_dict(document["special_tokens"], source=str(directory / CONFIG_FILE))
    task = task_from_state(extra["task"], config.arch, specials, tokenizer)
    with torch.device(device):
        model = task.build_model(build_model(config))
    load_weights(model, directory / WEIGHTS_FILE)
    return model.eval(), task, extra


def load_task_adapter(
    directory: Path, device: str = "cpu", base: str | os.PathLike | None = None
) -> tuple[nn.Module, Task, dict]:
    """A task's adapter folder (`triform finetune --lora.rank R`): its adapters and head on the base
    model folder it names (or `base`)."""
    document = read_adapter(directory)
    extra = document.get("extra") or {}
    base = base or (document.get("base") or {}).get("path")
    if "task" not in extra or not base:
        raise TriformError(f"{Path(directory) / ADAPTER_CONFIG}: not a task's adapters (no task, or no base path)")
    body, specials, tokenizer, _ = load_body(base, device)
    task = task_from_state(extra["task"], body.config.arch, specials, tokenizer)
    model = task.build_model(body)
    put_adapters(model, directory, base_name=f"{base}/{CONFIG_FILE}")
    return model.to(device).eval(), task, extra


def merge_task_adapter(directory: str | os.PathLike, output: str | os.PathLike, base: str | None = None) -> Path:
    """A task's adapters added into its body's weights: an ordinary fine-tuned model folder."""
    model, task, extra = load_task_adapter(Path(directory), base=base)
    merge_adapters(model)
    return save_task_model(model, task, output, extra={**extra, "merged_adapter": str(directory)})


def load_body(directory: str | os.PathLike, device: str = "cpu"):
    """A pretrained body with its tokenizer and special tokens, from a plain model folder or from a
    fine-tuned one (whose head is dropped), so that one fine-tuned model can start another."""
    directory = model_folder(directory)
    extra = read_config(directory).get("extra") or {}
    if "task" in extra:
        model, task, extra = load_task_model(directory, device)
        body = model.body if hasattr(model, "body") else model
        return body, task.framing.specials, task.tokenizer, extra
    pretrained = load_model(directory, device=device)
    if pretrained.tokenizer is None or pretrained.specials is None:
        raise TriformError(f"{Path(directory)}: fine-tuning needs the model's tokenizer.json and special tokens")
    return pretrained.model, pretrained.specials, pretrained.tokenizer, pretrained.extra
