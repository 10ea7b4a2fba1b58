"""Fine-tuning on the project's one trainer (train/loop.py): a pretrained body, a task head, the
task's features as the training examples and the task as the objective.

Only what differs from pretraining is written here: the model starts from a pretrained body, a
batch is collated from task features, and validation reports the task's metrics (the best
checkpoint is the one with the best main metric, not the lowest loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from triform.errors import ConfigError, TriformError
from triform.generate.engine import evaluation
from triform.models import build_model
from triform.progress import count, say
from triform.tasks import Layout, Task, make_task, read_records
from triform.tasks.checkpoint import load_body
from triform.tasks.layout import STACK_PATTERNS
from triform.tasks.options import FinetuneConfig
from triform.train import checkpoint as ckpt
from triform.train.batching import share
from triform.train.distributed import Processes, unwrap
from triform.train.loop import Trainer, derived_seed


class FeatureData:
    """Task features as the trainer's examples (a QA context gives one per window)."""

    def __init__(self, features: list):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def example(self, i: int):
        return self.features[i]


@dataclass
class _Resolved:  # what the trainer reads of a resolved run
    config: FinetuneConfig


@dataclass
class FinetuneSession:
    resolved: _Resolved
    task: Task
    body: torch.nn.Module
    body_extra: dict
    train_data: FeatureData
    valid_records: list | None
    valid_features: list | None  # encoded once, for the validation loss at every evaluation

    @property
    def objective(self) -> Task:  # the trainer computes `objective.loss(outputs, batch)`
        return self.task

    @property
    def model_config(self):
        return self.body.config


def default_pattern(arch: str, task: str, extra: dict) -> str:
    """Read the body as it was pretrained: bidirectionally if it learned to see both sides (mlm, or
    a prefix the heads fill entirely), causally if it learned left to right."""
    if arch == "encoder-decoder":
        return "causal"
    pattern = extra.get("pattern")
    if pattern is None:
        from triform.generate.api import imported_objective

        objective = extra.get("objective") or imported_objective(extra)
        pattern = "bidirectional" if objective == "mlm" else "causal"
    if task == "text2text":
        return "causal" if pattern == "causal" and extra.get("objective") == "clm" else "prefix"
    return "bidirectional" if pattern == "prefix" else pattern


def build_session(config: FinetuneConfig, processes: Processes) -> FinetuneSession:
    config.check()
    options = config.task_options()
    body, specials, tokenizer, extra = load_body(config.init)
    arch = body.config.arch
    pattern = config.pattern or default_pattern(arch, config.task, extra)
    if arch == "stack" and pattern not in STACK_PATTERNS:
        raise ConfigError(f"pattern: expected one of {list(STACK_PATTERNS)}, got {pattern!r}")
    max_len = config.max_len or body.config.max_len
    if max_len > body.config.max_len:
        raise ConfigError(f"max_len: {max_len} is longer than the model's max_len {body.config.max_len}")
    task = make_task(config.task, Layout(arch, pattern, specials, max_len), tokenizer, **options)
    required, columns = task.inputs + task.targets, task.check_columns(config.data.columns, "data.columns")
    records = read_records(config.data.train, required, columns)
    task.fit(records)
    features = task.encode_all(records, with_targets=True)
    valid = valid_features = None
    if config.data.valid:
        valid = read_records(config.data.valid, required, columns)
        valid_features = task.encode_all(valid, with_targets=True)  # an unknown label or a bad answer stops us now
    if config.from_scratch:
        torch.manual_seed(config.train.seed)
        body = build_model(body.config)
    pretraining = {k: v for k, v in extra.items() if k not in ("task", "step")}
    return FinetuneSession(_Resolved(config), task, body, pretraining, FeatureData(features), valid, valid_features)


class FinetuneTrainer(Trainer):
    def new_model(self) -> torch.nn.Module:
        return self.session.task.build_model(self.session.body)

    def local_batches(self, step: int) -> list:
        """This process's share of each micro-batch, whole features each (a pair's two orders or a
        question's candidates stay together)."""
        examples = self.order.examples(step)
        micro = self.loop.batch_size // self.loop.grad_accum
        generator = torch.Generator().manual_seed(derived_seed(self.loop.seed, step))
        start, stop = share(micro, self.processes.rank, self.processes.world_size)
        chunks = [examples[m * micro : (m + 1) * micro][start:stop] for m in range(self.loop.grad_accum)]
        return [self.session.task.collate(chunk, generator).to(self.device) for chunk in chunks]

    def saving(self) -> dict:
        task = self.session.task
        extra = {
            **self.session.body_extra,
            **task.body_extra(),
            "task": task.state(),
            "init": self.session.resolved.config.init,
            "from_scratch": self.session.resolved.config.from_scratch,
            "step": self.step,
        }
        return dict(strategy=self.strategy, specials=task.layout.specials, tokenizer=task.tokenizer, extra=extra)

    def evaluate(self) -> dict | None:
        """Validation loss (teacher forced, as in training) and the task's metrics on predictions."""
        records = self.session.valid_records
        if records is None:
            return None
        task, model = self.session.task, unwrap(self.model)
        loss_sum = n_targets = 0.0
        features = self.session.valid_features
        size = max(1, self.loop.batch_size // self.loop.grad_accum)
        with evaluation(model):
            with torch.no_grad(), self.autocast():
                for start in range(0, len(features), size):
                    batch = task.collate(features[start : start + size], torch.Generator().manual_seed(0)).to(
                        self.device
                    )
                    batch.lm = None  # the task's own loss
                    loss_sum += float(task.loss(model(**batch.model_inputs()), batch)) * batch.n_targets
                    n_targets += batch.n_targets
            metrics = task.evaluate(task.predict(model, records, batch_size=size), records)
        return {"loss": loss_sum / max(n_targets, 1), **metrics}

    def score(self, result: dict) -> float:
        return -result[self.session.task.metric]  # the task's metric: higher is better

    def valid_line(self, result: dict) -> str:
        return " | ".join(f"{k} {v:.4f}" for k, v in result.items())

    def plot_title(self) -> str:
        return f"{self.session.task.name} from {self.session.resolved.config.init}"

    def announce(self) -> None:
        session, config = self.session, self.session.resolved.config
        n_parameters = sum(p.numel() for p in unwrap(self.model).parameters())
        start = "random weights shaped as" if config.from_scratch else "pretrained"
        say(
            f"fine-tuning {session.task.name} on a {session.body.config.arch} read {session.task.layout.pattern}, "
            f"{start} {config.init}: {count(n_parameters)} parameters, {len(session.train_data)} training examples, "
            f"{self.processes.world_size} process(es) on {self.device.type}, {self.precision}, run folder "
            f"{self.run_dir}"
        )


def finetune(config: FinetuneConfig, should_stop=lambda: False) -> str:
    """Run (or resume) a fine-tuning as configured; returns 'done' or 'stopped'."""
    import dataclasses

    import yaml

    from triform.train.distributed import start, stop

    run_dir = Path(config.run_dir)
    existing = ckpt.checkpoints(run_dir)
    if existing and not config.resume:
        raise TriformError(
            f"run_dir: {run_dir} already holds a run (up to {existing[-1].name}); "
            "pass --resume true to continue it, or choose another --run_dir"
        )
    processes = start(config.train.device)
    try:
        session = build_session(config, processes)
        if processes.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            saved = {**dataclasses.asdict(config), "resume": False}
            (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
        processes.barrier()
        trainer = FinetuneTrainer(session, processes, run_dir)
        if config.resume:
            trainer.resume()
        outcome = trainer.run(should_stop)
        if not math.isinf(trainer.best) and processes.is_main:
            say(f"best {session.task.metric} {-trainer.best:.4f}: {run_dir / ckpt.BEST}")
        return outcome
    finally:
        stop(processes)
