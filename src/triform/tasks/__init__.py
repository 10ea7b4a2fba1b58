"""Downstream tasks on any pretrained body: classify, pair, choice, qa, tag, text2text and embed.

`make_task(name, framing, tokenizer, **options)` builds a task; `task.fit(records)` reads its label
set from training data; `task.build_model(body)` attaches the head; `task.loss(model, batch)`
trains it and `task.predict(model, records)` answers. `task.state()` is what a saved model keeps,
and `task_from_state` rebuilds the task from it.
"""

from __future__ import annotations

from triform.tasks.base import Feature, Task, TaskBatch
from triform.tasks.choice import Choice
from triform.tasks.classify import Classify, Pair
from triform.tasks.contrastive import Embed
from triform.tasks.data import DataError, Record, read_records, write_jsonl
from triform.tasks.framing import Framing
from triform.tasks.model import TaskModel
from triform.tasks.qa import ExtractiveQA
from triform.tasks.tag import Tag
from triform.tasks.text2text import TextToText

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Classify, Pair, Choice, ExtractiveQA, Tag, TextToText, Embed)}


def make_task(name: str, framing: Framing, tokenizer, **options) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {list(TASKS)}")
    return TASKS[name](framing, tokenizer, **options)


def task_from_state(state: dict, arch: str, specials, tokenizer) -> Task:
    """The task a saved model was trained for, as `Task.state()` described it."""
    options = {key: value for key, value in state.items() if key not in ("name", "pattern", "max_len", "mode_token")}
    framing = Framing(arch, state["pattern"], specials, state["max_len"], state.get("mode_token"))
    return make_task(state["name"], framing, tokenizer, **options)


__all__ = [
    "TASKS",
    "Choice",
    "Classify",
    "DataError",
    "Embed",
    "ExtractiveQA",
    "Feature",
    "Framing",
    "Pair",
    "Record",
    "Tag",
    "Task",
    "TaskBatch",
    "TaskModel",
    "TextToText",
    "make_task",
    "read_records",
    "task_from_state",
    "write_jsonl",
]
