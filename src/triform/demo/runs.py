"""Training runs for the demo and for `triform compare`: the configuration `triform train` reads,
trained by `triform train`'s own code, with progress shown as a bar instead of log lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from triform.progress import Bar, count
from triform.train.config import (
    DataConfig,
    LoopConfig,
    ModelOverrides,
    ObjectiveConfig,
    OptimConfig,
    Resolved,
    RunConfig,
    TokenizerConfig,
    resolve,
)
from triform.train.loop import Trainer
from triform.train.metrics import read_metrics


class BarTrainer(Trainer):
    """The trainer of `triform train`; its log lines are kept, and its progress drawn as a bar."""

    def __init__(self, *args, bar: Bar, init_from: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.bar, self.lines = bar, []
        if init_from is not None:  # fine-tuning: start from a trained model's weights, as they are
            from triform.checkpoint import load_model

            self.model.load_state_dict(load_model(init_from).model.state_dict())

    def say(self, line: str) -> None:
        self.lines.append(line)

    def log_train(self, loss: float, rate: float, grad_norm: float, elapsed: float) -> None:
        super().log_train(loss, rate, grad_norm, elapsed)
        self.bar.update(self.step, f"loss {loss:.3f}, {count(rate)} tok/s")


@dataclass
class RunSpec:
    """One model to train: its architecture, objective and pattern, the data and the budget."""

    arch: str
    objective: str
    pattern: str | None
    train: str  # data files, as data.train
    valid: str | None
    tokenizer: str  # a tokenizer.json every run of a comparison shares
    steps: int
    batch_size: int
    model: dict = field(default_factory=dict)  # ModelConfig fields
    lr: float = 2e-3
    warmup_steps: int = 30
    seed: int = 0
    log_every: int = 5
    too_long: str = "error"
    bucket: bool = True  # data.bucket: off where a pair's length goes with its content
    eval_batches: int = 0  # validation batches at the end (0: all of the validation data)


def resolved_run(spec: RunSpec, run_dir: Path) -> Resolved:
    """The checked configuration, exactly as `triform train` would build it from these options."""
    model = ModelOverrides(arch=spec.arch, **spec.model)
    config = RunConfig(
        run_dir=str(run_dir),
        model=model,
        objective=ObjectiveConfig(name=spec.objective, pattern=spec.pattern),
        data=DataConfig(train=spec.train, valid=spec.valid, too_long=spec.too_long, bucket=spec.bucket),
        tokenizer=TokenizerConfig(path=spec.tokenizer),
        optim=OptimConfig(lr=spec.lr, warmup_steps=min(spec.warmup_steps, spec.steps // 4)),
        train=LoopConfig(
            steps=spec.steps,
            batch_size=spec.batch_size,
            seed=spec.seed,
            log_every=spec.log_every,
            eval_every=spec.steps,
            eval_batches=spec.eval_batches,
            checkpoint_every=spec.steps,
            keep_last=1,
        ),
    )
    return resolve(config)


def train_with_bar(
    spec: RunSpec,
    run_dir: Path,
    label: str,
    *,
    show: bool = True,
    init_from: Path | None = None,
    resolved: Resolved | None = None,
) -> list[dict]:
    """Train one model into `run_dir` (as `triform train --run_dir`), from scratch or from the
    weights of the model folder `init_from`; returns its metrics records."""
    from triform.commands.train import train

    resolved = resolved or resolved_run(spec, run_dir)
    with Bar(spec.steps, label, enabled=show) as bar:
        train(resolved, run_dir, trainer_class=partial(BarTrainer, bar=bar, init_from=init_from))
    return read_metrics(run_dir)


def last_validation(records: list[dict]) -> dict:
    valid = [r for r in records if r.get("split") == "valid"]
    return valid[-1] if valid else {}
