"""One compared run: pretrain a pair on the text with the budget, then fine-tune a copy for each
held-out task with that task's fine-tuning budget and score it. Every training goes through `triform
train`'s (or `triform finetune`'s) own code; each run writes `result.json`, so an interrupted
comparison continues."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from triform.checkpoint import load_model
from triform.compare import heldout
from triform.compare.budget import compute_per_step, steps_for
from triform.compare.labelled import commonest_label_scores, score_labelled, train_labelled
from triform.compare.plan import NONE, TASK_OBJECTIVE, Entry, finetune_pattern
from triform.data.batches import WindowData
from triform.data.shards import load_prepared
from triform.data.tokenizers import load_tokenizer
from triform.demo.scores import context_free_log_probs
from triform.io import atomic_write
from triform.train.distributed import Processes
from triform.train.session import build_session
from triform.train.spec import RunSpec, resolved_run, train_spec
from triform.vocab import SpecialTokens


@dataclasses.dataclass
class Job:
    """Everything one run needs, as plain values (a job may run in another process)."""

    entry: Entry
    seed: int
    folder: str
    text_train: str  # prepared corpus folders
    text_valid: str
    pairs_train: str
    pairs_valid: str
    tokenizer: str
    model: dict
    budget: float
    fractions: dict[str, float]  # each held-out task's fine-tuning budget, as a fraction of `budget`
    batch_size: int
    lr: float
    eval_windows: int
    eval_pairs: int
    labels_task: str | None = None  # the name of the task on labelled records, when there are some
    labels_train: str | None = None  # their JSONL files (compare/labelled.py)
    labels_valid: str | None = None
    show: bool = True
    threads: int | None = None


def budgeted_spec(
    job: Job, objective: str, pattern: str | None, train: str, budget: float, run_dir: Path, options: dict
) -> tuple[RunSpec, object, float]:
    """The run's spec with as many steps as the budget buys, its resolved configuration and the
    measured compute of one step.
    Batches are plain shuffles (no length buckets), so that every step is a random mix of lengths
    and the compute measured on a few of them is that of any step. The held-out next- and
    masked-token windows are read as one stream across the [EOS] between sentences (heldout.py),
    so every model trains on the stream too."""
    spec = RunSpec(
        job.entry.arch,
        objective,
        pattern,
        train,
        None,
        job.tokenizer,
        steps=1,
        batch_size=job.batch_size,
        model=job.model,
        lr=job.lr,
        seed=job.seed,
        log_every=10,
        too_long="skip",
        bucket=False,
        pack="stream",
        options=options,
    )
    session = build_session(resolved_run(spec, run_dir), run_dir, Processes())
    per_step = compute_per_step(session, job.batch_size, job.seed)
    spec = dataclasses.replace(spec, steps=steps_for(budget, per_step))
    return spec, resolved_run(spec, run_dir), per_step


def train_budgeted(
    job: Job,
    objective: str,
    pattern: str | None,
    train: str,
    budget: float,
    run_dir: Path,
    label: str,
    init_from: Path | None = None,
    options: dict | None = None,
) -> dict:
    """Train with as many steps as the budget buys; `options` are the objective's own."""
    spec, resolved, per_step = budgeted_spec(job, objective, pattern, train, budget, run_dir, options or {})
    records = train_spec(spec, run_dir, label, show=job.show, init_from=init_from, resolved=resolved)
    train = [r for r in records if r.get("split") == "train"]
    for leftover in ("checkpoints", "best"):  # the final model is all that is used
        shutil.rmtree(run_dir / leftover, ignore_errors=True)
    return {
        "steps": spec.steps,
        "compute_per_step": per_step,
        "tokens": train[-1]["tokens"],
        "loss": train[-1]["loss"],
        "seconds": train[-1]["elapsed_s"],
    }


def evaluation_data(job: Job, tokenizer, max_len: int):
    windows_corpus = load_prepared(job.text_valid, tokenizer, parallel=False)
    windows = WindowData(windows_corpus, max_len - 2)
    picks = np.linspace(0, len(windows) - 1, min(job.eval_windows, len(windows))).round().astype(int)
    texts = [windows.example(int(i)) for i in picks]
    pairs_corpus = load_prepared(job.pairs_valid, tokenizer, parallel=True)
    shard = pairs_corpus.shards[0]
    pairs = []
    for index in range(len(shard.documents)):
        source, target = shard.documents.document(index).tolist(), shard.targets.document(index).tolist()
        fits = len(source) + 1 <= max_len and len(target) + 1 <= max_len and len(source) + len(target) + 1 <= max_len
        if fits:
            pairs.append((source, target))
    step = max(1, len(pairs) // max(job.eval_pairs, 1))
    return texts, pairs[::step][: job.eval_pairs]


def reference_scores(job: Job) -> dict:
    """The scores that need no model (heldout.context_free_scores) on the data every run is scored on."""
    tokenizer = load_tokenizer(job.tokenizer)
    specials = SpecialTokens.from_tokenizer(tokenizer)
    texts, pairs = evaluation_data(job, tokenizer, job.model["max_len"])
    train = load_prepared(job.text_train, tokenizer, parallel=False)
    log_probs = context_free_log_probs(train, tokenizer.get_vocab_size(with_added_tokens=True))
    scores = heldout.context_free_scores(texts, pairs, tokenizer, specials, log_probs)
    if job.labels_task:
        scores[job.labels_task] = commonest_label_scores(job.labels_train, job.labels_valid)
    return scores


def score(task: str, model, texts, pairs, tokenizer, specials, pattern: str) -> dict:
    if task == "next-token":
        return heldout.next_token(model, texts, specials)
    if task == "masked-token":
        return heldout.masked_token(model, texts, specials)
    return heldout.restore(model, pairs, tokenizer, specials, pattern)


def run_job(job: Job) -> dict:
    """Pretrain (unless the entry is the baseline), fine-tune per task, score; writes result.json."""
    if job.threads:
        torch.set_num_threads(job.threads)
    started = time.monotonic()
    folder = Path(job.folder)
    entry = job.entry
    result = {
        "arch": entry.arch,
        "objective": entry.objective,
        "pattern": entry.pattern,
        "options": dict(entry.options),
        "seed": job.seed,
    }
    pretrained = None
    if entry.objective != NONE:
        result["pretraining"] = train_budgeted(
            job,
            entry.objective,
            entry.pattern,
            job.text_train,
            job.budget,
            folder / "pretrain",
            f"{entry.label} (seed {job.seed}): pretraining",
            options=dict(entry.options),
        )
        pretrained = folder / "pretrain" / "model"
    tokenizer = load_tokenizer(job.tokenizer)
    specials = SpecialTokens.from_tokenizer(tokenizer)
    texts, pairs = evaluation_data(job, tokenizer, job.model["max_len"])
    for task, fraction in job.fractions.items():
        label, run_dir = f"{entry.label} (seed {job.seed}): {task}", folder / task
        if task == job.labels_task:  # a body from nothing: the next-token model's shape, random weights
            init = pretrained or folder / "next-token" / "model"
            trained = train_labelled(job, init, run_dir, fraction * job.budget, label, from_scratch=pretrained is None)
            result[task] = score_labelled(run_dir / "model", job.labels_valid)
        else:
            pattern = finetune_pattern(entry.arch, task)
            data = job.pairs_train if task == "restore" else job.text_train
            objective = TASK_OBJECTIVE[task]
            trained = train_budgeted(
                job, objective, pattern, data, fraction * job.budget, run_dir, label, init_from=pretrained
            )
            model = load_model(run_dir / "model").model
            result[task] = score(task, model, texts, pairs, tokenizer, specials, pattern)
        result[f"{task} fine-tuning"] = {**trained, "fraction": fraction, "budget": fraction * job.budget}
    result["seconds"] = time.monotonic() - started
    atomic_write(folder / "result.json", json.dumps(result, indent=1))
    return result
