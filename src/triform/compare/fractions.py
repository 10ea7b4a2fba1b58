"""Each held-out task's fine-tuning budget, as a fraction of the pretraining budget.

Tasks differ in what they need: a fraction that buys a next-token model a useful fine-tuning may
leave a sequence-to-sequence task short of learning to copy its input. `--finetune` is one number
for every task (`0.25`), or one per task: `restore=6,next=0.25` (a task by its name or its first
word), a bare number among them for the tasks not named (`0.25,restore=6`), or a JSON mapping
(`{"restore": 6, "genre": 0.5}`). A task named nowhere gets DEFAULT.
"""

from __future__ import annotations

import json
import math

from triform.errors import TriformError

DEFAULT = 0.25
MOST = 100.0  # a fraction above this is a typo more often than a plan


def finetune_fractions(given: float | str | dict, tasks: list[str] | tuple[str, ...]) -> dict[str, float]:
    """{task: fraction} for every task, from the forms above; a bad item is a one-line error naming it."""
    default, named = DEFAULT, {}
    for key, raw in items(given):
        fraction = number(key, raw)
        if key is None:
            default = fraction
            continue
        task = task_named(key, tasks)
        if task in named:
            raise TriformError(f"--finetune: {task} is given twice")
        named[task] = fraction
    return {task: named.get(task, default) for task in tasks}


def items(given: float | str | dict) -> list[tuple[str | None, object]]:
    """(task or None for every task, value) pairs of any accepted form."""
    if isinstance(given, dict):
        return [(str(k), v) for k, v in given.items()]
    if isinstance(given, (int, float)):
        return [(None, given)]
    text = str(given).strip()
    if text.startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as error:
            raise TriformError(f"--finetune: not a JSON mapping of task to fraction ({error})") from None
        if not isinstance(mapping, dict):
            raise TriformError('--finetune: expected a JSON mapping of task to fraction, e.g. {"restore": 6}')
        return [(str(k), v) for k, v in mapping.items()]
    found = []
    for item in text.split(","):
        key, equals, value = item.partition("=")
        found.append((key.strip(), value.strip()) if equals else (None, key.strip()))
    return found


def number(task: str | None, raw: object) -> float:
    where = f"{task}={raw}" if task is not None else repr(raw)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TriformError(f"--finetune: {where}: expected a number, a fraction of --budget") from None
    if not (0 < value <= MOST) or math.isnan(value):
        raise TriformError(f"--finetune: {where}: expected a fraction of --budget in (0, {MOST:g}]")
    return value


def task_named(key: str, tasks: list[str] | tuple[str, ...]) -> str:
    """The task a key names: its name, or the first word of it (`next` for next-token)."""
    for task in tasks:
        if key in (task, task.split("-")[0]):
            return task
    listed = ", ".join(tasks)
    raise TriformError(f"--finetune: {key!r} names no held-out task of this comparison; expected one of {listed}")
