"""The held-out task made from labelled text (`--labels`): each compared model fine-tuned with
triform's classify task (a pooled head on the body, tasks/classify.py) and scored by accuracy and
macro-F1 on held-out records, e.g. the genre of a Brown sentence.

Records are any file `triform finetune` reads (JSONL, CSV, TSV, parquet) with a text and a label
column (`--labels_columns '{"label": "genre"}'` maps other names). The held-out records are
`--labels_valid`, or else every VALID_EVERY-th record; a held-out label never seen in training
cannot be predicted and is left out (the count is shown).
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

from triform.compare.budget import path_parameters, steps_for, task_compute_per_step
from triform.errors import TriformError
from triform.io import write_jsonl
from triform.tasks import read_records
from triform.tasks.checkpoint import load_task_model
from triform.tasks.finetune import build_task, finetune
from triform.tasks.metrics import accuracy, macro_f1
from triform.tasks.options import FinetuneConfig, TaskData
from triform.train.config import LoopConfig, OptimConfig
from triform.train.metrics import read_metrics
from triform.train.reporting import ProgressBar

VALID_EVERY = 10
SAMPLED = 512  # training records encoded to measure the tokens of an average step
COLUMNS = ("text", "label")


def split_labelled(settings, folder: Path, show) -> dict:
    """Training and held-out records as JSONL with the columns text and label; their counts."""
    train = read(settings.labels, settings.labels_columns, "--labels")
    if settings.labels_valid:
        valid = read(settings.labels_valid, settings.labels_columns, "--labels_valid")
    else:
        if len(train) < 2 * VALID_EVERY:
            raise TriformError(f"--labels: {settings.labels} holds {len(train)} records; at least {2 * VALID_EVERY}")
        train, valid = (
            [r for i, r in enumerate(train) if (i + 1) % VALID_EVERY],
            train[VALID_EVERY - 1 :: VALID_EVERY],
        )
    known = {r["label"] for r in train}
    if len(known) < 2:
        raise TriformError(f"--labels: {settings.labels} holds one label ({next(iter(known))!r}); expected two or more")
    unseen = sum(r["label"] not in known for r in valid)
    valid = [r for r in valid if r["label"] in known]
    if not valid:
        raise TriformError("--labels_valid: no held-out record has a label seen in training")
    if len(valid) > settings.eval_labels:  # evenly spread over the file, not its first records
        step = len(valid) / settings.eval_labels
        valid = [valid[int(i * step)] for i in range(settings.eval_labels)]
    if unseen:
        show(f"{unseen} held-out labelled records left out: their labels are not among the training records'")
    return {
        "labels_train": str(write_jsonl(folder / "labels-train.jsonl", train)),
        "labels_valid": str(write_jsonl(folder / "labels-valid.jsonl", valid)),
        "labels_train_records": len(train),
        "labels_valid_records": len(valid),
        "labels": len(known),
    }


def read(path: str, columns: dict | None, option: str) -> list[dict]:
    try:
        records = read_records(path, COLUMNS, columns)
    except TriformError as error:
        raise TriformError(f"{option}: {error}") from None
    return [{"text": str(r.require("text")), "label": str(r.require("label"))} for r in records]


def commonest_label_scores(train: str, valid: str) -> dict:
    """What no model scores: always the commonest training label."""
    labels = [r["label"] for r in read(train, None, "--labels")]
    guess = collections.Counter(labels).most_common(1)[0][0]
    truth = [r["label"] for r in read(valid, None, "--labels_valid")]
    return {"accuracy": accuracy([guess] * len(truth), truth), "macro_f1": macro_f1([guess] * len(truth), truth)}


def finetuning_config(job, init: Path, run_dir: Path, steps: int, from_scratch: bool) -> FinetuneConfig:
    """`triform finetune --task classify` on the training records, with no validation during it
    (the held-out records are scored once at the end). A body trained from nothing is read
    bidirectionally when it is a stack: there is no pretraining for the recipe to follow."""
    pattern = "bidirectional" if from_scratch and job.entry.arch == "stack" else None
    return FinetuneConfig(
        task="classify",
        init=str(init),
        run_dir=str(run_dir),
        from_scratch=from_scratch,
        pattern=pattern,
        data=TaskData(train=job.labels_train),
        optim=OptimConfig(lr=job.lr, warmup_steps=min(30, steps // 4)),
        train=LoopConfig(
            steps=steps,
            batch_size=job.batch_size,
            seed=job.seed,
            log_every=10,
            eval_every=steps,
            checkpoint_every=steps,
            keep_last=1,
        ),
    )


def step_compute(config: FinetuneConfig, batch_size: int) -> float:
    """The compute of one fine-tuning step, measured on SAMPLED training records spread over the file."""
    task, body, _ = build_task(config)
    records = read_records(config.data.train, COLUMNS)
    task.fit(records)
    sample = records[:: max(1, len(records) // SAMPLED)]
    return task_compute_per_step(task.encode_all(sample, with_targets=True), batch_size, path_parameters(body.config))


def train_labelled(job, init: Path, run_dir: Path, budget: float, label: str, from_scratch: bool) -> dict:
    """Fine-tune with as many steps as the budget buys; the same record as every other training."""
    per_step = step_compute(finetuning_config(job, init, run_dir, 1, from_scratch), job.batch_size)
    steps = steps_for(budget, per_step)
    finetune(finetuning_config(job, init, run_dir, steps, from_scratch), progress=ProgressBar(label, enabled=job.show))
    for leftover in ("checkpoints", "best"):  # the final model is all that is used
        shutil.rmtree(run_dir / leftover, ignore_errors=True)
    train = [r for r in read_metrics(run_dir) if r.get("split") == "train"]
    return {
        "steps": steps,
        "compute_per_step": per_step,
        "tokens": train[-1].get("tokens", 0),
        "loss": train[-1]["loss"],
        "seconds": train[-1]["elapsed_s"],
    }


def score_labelled(model_dir: Path, valid: str) -> dict:
    """Accuracy and macro-F1 of the fine-tuned model on the held-out records."""
    model, task, _ = load_task_model(model_dir)
    records = read_records(valid, COLUMNS)
    scores = task.metrics_of(task.predict(model, records), records)
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "records": len(records)}
