"""The fine-tuning configuration: which task, from which model, on which data, and how to train.

The optimizer and loop sections are those of `triform train` (train/config.py), so that every
option of pretraining (steps, batch size, schedule, precision, checkpoints, time limit, several
processes) works the same when fine-tuning. Task options that do not apply to the chosen task are
refused by name rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

from triform.errors import ConfigError
from triform.train.config import LoopConfig, OptimConfig, check_loop

TaskName = Literal["classify", "pair", "choice", "qa", "tag", "text2text"]
Pattern = Literal["bidirectional", "causal", "prefix"]


@dataclass
class TaskData:
    """Training and validation records (JSONL, CSV, TSV or parquet, with the task's columns)."""

    train: str = ""
    valid: Optional[str] = None
    columns: Optional[dict[str, str]] = None  # the file's column for a task column: {"label": "genre"}


@dataclass
class FinetuneConfig:
    task: TaskName = "classify"
    init: str = ""  # a model folder: pretrained (`triform train`, `triform convert`) or already fine-tuned
    run_dir: str = "runs/finetune"
    resume: bool = False
    from_scratch: bool = False  # the init model's config and tokenizer, with random weights: the baseline
    pattern: Optional[Pattern] = None  # how to read a stack; None: as it was pretrained
    max_len: Optional[int] = None  # tokens per input; None: the model's max_len
    lm_weight: float = 0.0  # λ of the auxiliary language-model loss (GPT-1 used 0.5)
    regression: bool = False  # classify, pair: a number per example, not a label
    both_orders: Optional[bool] = None  # pair: read both orders and add (None: on a causal stack)
    stride: Optional[int] = None  # qa: tokens shared by neighbouring windows of a long context
    max_answer_tokens: int = 30  # qa
    data: TaskData = field(default_factory=TaskData)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def task_options(self) -> dict:
        """The options of the chosen task; a non-default option of another task is an error."""
        owners = {
            "regression": ("classify", "pair"),
            "both_orders": ("pair",),
            "stride": ("qa",),
            "max_answer_tokens": ("qa",),
            "lm_weight": ("classify", "pair", "choice", "qa", "tag"),
        }
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        options = {}
        for name, tasks in owners.items():
            value = getattr(self, name)
            if self.task in tasks:
                options[name] = value
            elif value != defaults[name]:
                raise ConfigError(f"{name}: applies to the {' and '.join(tasks)} task(s), not {self.task}")
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
