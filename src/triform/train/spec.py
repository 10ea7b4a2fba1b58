"""One training run described by a few plain values (architecture, objective, data, budget), trained
by `triform train`'s own code with a progress bar: what the demo and `triform compare` run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from triform.errors import ConfigError
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
    section_name,
)
from triform.train.metrics import read_metrics
from triform.train.reporting import ProgressBar
from triform.train.run import train


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
    pack: str = "documents"  # data.pack: how the documents of a packed window see each other
    eval_batches: int = 0  # validation batches at the end (0: all of the validation data)
    options: dict = field(default_factory=dict)  # the objective's own options, read by the objective


def resolved_run(spec: RunSpec, run_dir: Path) -> Resolved:
    """The checked configuration, exactly as `triform train` would build it from these options."""
    config = RunConfig(
        run_dir=str(run_dir),
        model=ModelOverrides(arch=spec.arch, **spec.model),
        objective=objective_config(spec),
        data=DataConfig(train=spec.train, valid=spec.valid, too_long=spec.too_long, bucket=spec.bucket, pack=spec.pack),
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


def objective_config(spec: RunSpec):
    """The objective's section of the configuration, with the spec's options set where `triform train`
    takes them: `--objective.mlm.rate 0.3`, or at the top (`--objective.label_smoothing 0.1`)."""
    config = ObjectiveConfig(name=spec.objective, pattern=spec.pattern)
    section = getattr(config, section_name(spec.objective), None)
    for name, value in spec.options.items():
        if (
            name not in ("name", "pattern")
            and hasattr(config, name)
            and not dataclasses.is_dataclass(getattr(config, name))
        ):
            setattr(config, name, value)
        elif section is not None and name in {f.name for f in dataclasses.fields(section)}:
            setattr(section, name, value)
        else:
            known = sorted(f.name for f in dataclasses.fields(section)) if section is not None else []
            raise ConfigError(
                f"objective: the {spec.objective} objective has no option {name!r} (its options: "
                f"{', '.join(known) or 'none'})"
            )
    return config


def train_spec(
    spec: RunSpec,
    run_dir: Path,
    label: str,
    *,
    show: bool = True,
    init_from: Path | None = None,
    resolved: Resolved | None = None,
) -> list[dict]:
    """Train one model into `run_dir` (as `triform train --run_dir`), from scratch or from the
    weights of the model folder `init_from`, with a progress bar; returns its metrics records."""
    resolved = resolved or resolved_run(spec, run_dir)
    train(resolved, run_dir, progress=ProgressBar(label, enabled=show), init_from=init_from)
    return read_metrics(run_dir)


def last_validation(records: list[dict]) -> dict:
    valid = [r for r in records if r.get("split") == "valid"]
    return valid[-1] if valid else {}
