"""Fine-tuning on the project's one trainer (train/loop.py): a pretrained body, a task head, the
task's features as the training examples and the task as the training problem.

Only what differs from pretraining is written here: the model starts from a pretrained body read as
its recipe says, the examples are task features, and validation reports the task's metrics (the best
checkpoint is the one with the best main metric, not the lowest loss).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch

from triform.errors import ConfigError
from triform.models import build_model
from triform.objectives import read_recipe
from triform.tasks import TASKS, Framing, Task, make_task, read_records
from triform.tasks.base import Validation
from triform.tasks.checkpoint import load_body
from triform.tasks.framing import STACK_PATTERNS
from triform.tasks.options import FinetuneConfig
from triform.train import checkpoint as ckpt
from triform.train.distributed import Processes
from triform.train.loop import Job, Saved
from triform.train.metrics import read_metrics
from triform.train.reporting import LogLines, Reporter
from triform.train.run import adapt_for_training, run_training


class FeatureData:
    """Task features as the trainer's examples (a QA context gives one per window)."""

    def __init__(self, features: list):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def example(self, i: int):
        return self.features[i]


def default_pattern(arch: str, task: str, extra: dict) -> str:
    """Read the body as its recipe says it was pretrained (Objective.body_pattern): bidirectionally if
    it learned to see both sides, causally if it learned left to right."""
    return read_recipe(extra, arch).body_pattern(arch, writes=TASKS[task].writes)


def default_mode(arch: str, task: str, extra: dict, specials) -> int | None:
    """The mode token of the recipe's part for this task, for a body pretrained with mode tokens."""
    part = read_recipe(extra, arch).part(arch, need="write" if TASKS[task].writes else "read")
    return None if part.mode is None else specials.mode(part.mode, f"fine-tuning a body trained with {part.objective}")


def build_task(config: FinetuneConfig) -> tuple[Task, torch.nn.Module, dict]:
    """The task, reading the pretrained body as configured, and the body with its folder's extra."""
    options = config.task_options()
    body, specials, tokenizer, extra = load_body(config.init)
    arch = body.config.arch
    pattern = config.pattern or default_pattern(arch, config.task, extra)
    if arch == "stack" and pattern not in STACK_PATTERNS:
        raise ConfigError(f"pattern: expected one of {list(STACK_PATTERNS)}, got {pattern!r}")
    max_len = config.max_len or body.config.max_len
    if max_len > body.config.max_len:
        raise ConfigError(f"max_len: {max_len} is longer than the model's max_len {body.config.max_len}")
    mode = default_mode(arch, config.task, extra, specials)
    task = make_task(config.task, Framing(arch, pattern, specials, max_len, mode), tokenizer, **options)
    task.start_from(extra)
    return task, body, extra


def finetuning_job(config: FinetuneConfig) -> Job:
    config.check()
    task, body, extra = build_task(config)
    required, columns = task.inputs + task.targets, task.check_columns(config.data.columns, "data.columns")
    records = read_records(config.data.train, task.training_columns(), columns)
    task.fit(records)
    features = task.training_features(records)
    valid = None
    if config.data.valid:
        valid_records = read_records(config.data.valid, required, columns)
        # Encoded once, for the validation loss at every evaluation; an unknown label or a bad
        # answer stops the run now.
        valid = Validation(valid_records, task.encode_all(valid_records, with_targets=True))
    if config.from_scratch:
        torch.manual_seed(config.train.seed)
        body = build_model(body.config)
    torch.manual_seed(config.train.seed)  # the same initial head (and adapters) on every process
    model = adapt_for_training(task.build_model(body), config.lora, config.train, body=body)
    pretraining = {k: v for k, v in extra.items() if k not in ("task", "step")}
    saved_extra = {
        **pretraining,
        **task.body_extra(),
        "task": task.state(),
        "init": config.init,
        "from_scratch": config.from_scratch,
    }
    start = "random weights shaped as" if config.from_scratch else "pretrained"
    return Job(
        problem=task,
        model=model,
        train_data=FeatureData(features),
        valid_data=valid,
        loop=config.train,
        optim=config.optim,
        saved=Saved(task.framing.specials, task.tokenizer, saved_extra),
        description=f"fine-tuning {task.name} on a {body.config.arch} read {task.framing.pattern}, "
        f"{start} {config.init}",
        title=f"{task.name} from {config.init}",
        data_name=str(config.data.train),
    )


def finetune(config: FinetuneConfig, should_stop=lambda: False, *, progress: Reporter | None = None) -> str:
    """Run (or resume) a fine-tuning as configured; returns 'done' or 'stopped'."""
    run_dir = Path(config.run_dir)
    progress = progress or LogLines()
    outcome: dict = {}

    def build(processes: Processes):
        job = finetuning_job(config)
        outcome["metric"] = job.problem.metric
        return job, {**dataclasses.asdict(config), "resume": False}

    result = run_training(
        run_dir,
        resume=config.resume,
        device=config.train.device,
        build=build,
        should_stop=should_stop,
        progress=progress,
    )
    best = best_score(run_dir, outcome.get("metric"))
    if best is not None and int(os.environ.get("RANK", "0")) == 0:
        progress.message(f"best {outcome['metric']} {best:.4f}: {run_dir / ckpt.BEST}")
    return result


def best_score(run_dir: Path, metric: str | None) -> float | None:
    """The best validation value of the task's main metric, as the run recorded it."""
    values = [r[metric] for r in read_metrics(run_dir) if r.get("split") == "valid" and metric in r]
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return max(values) if values else None
