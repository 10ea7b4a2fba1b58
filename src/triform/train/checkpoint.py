"""Training checkpoints: a model folder (safetensors + config.json + tokenizer.json) plus
`trainer.pt` with the optimizer, the scheduler and the position in the data. A model with LoRA
adapters saves an adapter folder instead (models/adapters.py): the trained tensors alone, naming
the base model they go on (extra["init"]).

Each checkpoint is written into a hidden staging folder and swapped into place (triform.io.atomic_dir),
so a run killed mid-save leaves the previous checkpoint intact. Randomness is derived from (seed, step),
so the step is all a resume needs to replay the same masks, dropout and batch order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from triform.checkpoint import RUN_BEST, RUN_CHECKPOINTS, RUN_FINAL, WEIGHTS_FILE, load_weights, save_model, write_model
from triform.errors import TriformError
from triform.io import atomic_dir
from triform.models import build_model
from triform.models.adapters import ADAPTER_WEIGHTS, load_trainable, save_adapter, write_adapter
from triform.models.lora import has_adapters
from triform.train.distributed import Processes, unwrap

CHECKPOINTS, BEST, FINAL = RUN_CHECKPOINTS, RUN_BEST, RUN_FINAL  # the run folder's layout (triform/checkpoint.py)
TRAINER_STATE = "trainer.pt"
COMPANIONS = "companions"  # in trainer.pt: weights of the modules a problem trains beside the model


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:07d}"


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, strategy: str) -> tuple[dict, dict]:
    """Whole (unsharded) model and optimizer state; with FSDP every process must call this."""
    if strategy == "fsdp" and torch.distributed.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(model).state_dict(), optimizer.state_dict()


def plain_model(model: nn.Module, state: dict, strategy: str) -> nn.Module:
    """A single-device model holding `state`, for save_model."""
    if strategy != "fsdp" or not torch.distributed.is_initialized():
        return unwrap(model)
    copy = build_model(unwrap(model).config)
    copy.load_state_dict(state)
    return copy


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    state: dict,
    processes: Processes,
    *,
    strategy: str,
    specials,
    tokenizer,
    extra: dict,
) -> Path:
    model_state, optimizer_state = full_state(model, optimizer, strategy)
    target = checkpoint_dir(run_dir, step)
    if processes.is_main:
        with atomic_dir(target) as staging:
            plain = plain_model(model, model_state, strategy)
            if has_adapters(plain):
                write_adapter(
                    plain, staging, base=extra.get("init"), specials=specials, tokenizer=tokenizer, extra=extra
                )
            else:
                write_model(plain, staging, specials=specials, tokenizer=tokenizer, extra=extra)
            trainer = {"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(), **state}
            torch.save(trainer, staging / TRAINER_STATE)
    processes.barrier()
    return target


def save_plain(
    run_dir: Path, name: str, model, processes: Processes, *, strategy: str, specials, tokenizer, extra: dict
) -> Path:
    """The model alone, as `run_dir/name` (best, model)."""
    if strategy == "fsdp" and torch.distributed.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = None
    if processes.is_main:
        plain = plain_model(model, state, strategy)
        saving = dict(specials=specials, tokenizer=tokenizer, extra=extra)
        if has_adapters(plain):
            save_adapter(plain, run_dir / name, base=extra.get("init"), **saving)
        else:
            save_model(plain, run_dir / name, **saving)
    processes.barrier()
    return run_dir / name


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / TRAINER_STATE).is_file())


def remove_partial(run_dir: Path) -> None:
    """Staging folders (and folders moved aside) of a save that a kill interrupted."""
    for staging in (run_dir / CHECKPOINTS).glob(".step-*"):
        shutil.rmtree(staging, ignore_errors=True)


def prune(run_dir: Path, keep_last: int) -> None:
    for old in checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, *, strategy: str) -> dict:
    """Restore model, optimizer and scheduler from a checkpoint folder; returns the trainer state."""
    try:
        trainer = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise TriformError(f"{path / TRAINER_STATE}: unreadable training state ({error})") from None
    if strategy == "fsdp" and torch.distributed.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        copy = _loaded_copy(model, path)  # the weights as one tensor each, then scattered to the shards
        set_state_dict(
            model,
            optimizer,
            model_state_dict=copy.state_dict(),
            optim_state_dict=trainer["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
    elif has_adapters(unwrap(model)):
        load_trainable(unwrap(model), path / ADAPTER_WEIGHTS)
        optimizer.load_state_dict(trainer["optimizer"])
    else:
        load_weights(unwrap(model), path / WEIGHTS_FILE)
        optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    return trainer


def _loaded_copy(model, path: Path) -> nn.Module:
    copy = build_model(unwrap(model).config)
    load_weights(copy, path / WEIGHTS_FILE)
    return copy


def companion_state(module: nn.Module) -> dict:
    """The weights of a training module (train/problem.py) but those of the model it holds as `model`."""
    return {name: value for name, value in module.state_dict().items() if not name.startswith("model.")}


def load_companions(module: nn.Module, model: nn.Module, trainer: dict, path: Path) -> None:
    """Restore the modules trained beside `model` inside `module` from a checkpoint's training state."""
    if COMPANIONS not in trainer:
        raise TriformError(
            f"{path / TRAINER_STATE}: holds no weights of the modules this objective trains beside the model; "
            "resume with the objective the run was trained with"
        )
    whole = {f"model.{name}": value for name, value in model.state_dict().items()}
    try:
        module.load_state_dict({**whole, **trainer[COMPANIONS]})
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise TriformError(f"{path / TRAINER_STATE}: its companion modules do not fit this run ({first})") from None
