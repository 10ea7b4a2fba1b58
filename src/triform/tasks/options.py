"""The fine-tuning configuration: which task, from which model, on which data, and how to train.

The optimizer and loop sections are those of `triform train` (train/config.py), so that every
option of pretraining (steps, batch size, schedule, precision, checkpoints, time limit, several
processes) works the same when fine-tuning. A task's own options live in a section named after it
(`--qa.stride 64`, `--pair.both_orders false`), made from the task's `Options`; setting another
task's section is refused by name rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

from triform.errors import ConfigError
from triform.models.lora import LoraOptions
from triform.tasks import TASKS
from triform.train.config import LoopConfig, OptimConfig, check_loop, check_lora, optional_fields

TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]
Pattern = Literal["bidirectional", "causal", "prefix"]


@dataclass
class TaskData:
    """Training and validation records (JSONL, CSV, TSV or parquet, with the task's columns)."""

    train: str = ""
    valid: Optional[str] = None
    columns: Optional[dict[str, str]] = None  # the file's column for a task column: {"label": "genre"}


SECTIONS = {
    name: optional_fields(cls.Options, f"{cls.__name__}Options", f"Options of the {name} task.")
    for name, cls in TASKS.items()
    if dataclasses.fields(cls.Options)
}


@dataclass
class FinetuneBase:
    task: TaskName = "classify"
    init: str = ""  # a model folder: pretrained (`triform train`, `triform convert`) or already fine-tuned
    run_dir: str = "runs/finetune"
    resume: bool = False
    from_scratch: bool = False  # the init model's config and tokenizer, with random weights: the baseline
    pattern: Optional[Pattern] = None  # how to read a stack; None: as it was pretrained
    max_len: Optional[int] = None  # tokens per input; None: the model's max_len
    lm_weight: float = 0.0  # λ of the auxiliary language-model loss (GPT-1 used 0.5); head tasks only
    data: TaskData = field(default_factory=TaskData)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)  # adapters on the body; the task head trains whole


def _with_sections(base: type) -> type:
    made = dataclasses.make_dataclass(
        "FinetuneConfig",
        [(name, options, field(default_factory=options)) for name, options in SECTIONS.items()],
        bases=(base,),
    )
    made.__module__ = __name__
    return made


class FinetuneConfig(_with_sections(FinetuneBase)):
    """`triform finetune`'s options."""

    def task_options(self) -> dict:
        """The options of the chosen task: its section, and lm_weight; another task's section is an error."""
        options = {}
        for name in SECTIONS:
            given = {k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if v is not None}
            if given and name != self.task:
                raise ConfigError(f"{name}.{next(iter(given))}: applies to the {name} task, not {self.task}")
            if name == self.task:
                options.update(given)
        if self.lm_weight:
            options["lm_weight"] = self.lm_weight
        return options

    def check(self) -> None:
        if not self.init:
            raise ConfigError("init: expected the model folder to fine-tune (--init runs/my-model/model)")
        if not self.data.train:
            raise ConfigError("data.train: expected a file of training records (--data.train train.jsonl)")
        if self.train.strategy == "fsdp":
            raise ConfigError("train.strategy: fine-tuning runs on ddp; fsdp shards a bare model's stacks only")
        if self.max_len is not None and self.max_len < 8:
            raise ConfigError(f"max_len: expected 8 or more tokens, got {self.max_len}")
        check_loop(self)
        check_lora(self)
        if self.lora.enabled and self.from_scratch:
            raise ConfigError("lora.rank: adapters adapt trained weights; drop from_scratch")
