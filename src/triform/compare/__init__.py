"""`triform compare`: the T5 paper's Table 2 (Raffel et al. 2020) in miniature, on your text.

Every allowed architecture x objective pair is pretrained on the same data with the same compute
(tokens x parameters), then fine-tuned for each held-out task with that task's fraction of the
budget (the same for every pair) and scored: next token, masked token, a sequence-to-sequence task
made from the text, and, given labelled records (`labels`), classification. Several seeds give
error bars. Outputs: results.csv (one row per run), table.md and table.csv (mean ± standard
deviation per pair, and what each training was given), budgets.csv, findings.md (who wins each
task and on average), compare.png, and each run's folder with its models and metrics.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from triform.compare.findings import findings
from triform.compare.fractions import finetune_fractions
from triform.compare.plan import TASKS, Entry, entries
from triform.compare.runner import Job, reference_scores, run_job
from triform.compare.setup import prepare_data
from triform.compare.table import HEADLINE, score_columns, write_outputs
from triform.errors import TriformError
from triform.io import atomic_write
from triform.progress import duration

SETTINGS_FILE = "compare.json"


@dataclass
class Settings:
    data: str
    valid: str | None = None
    out: str = "runs/compare"
    budget: float = 5e10  # tokens x non-embedding parameters of each pretraining
    # Each task's fine-tuning budget, as a fraction of the pretraining budget: one number for every
    # task, or per task ("restore=6,next=0.25" or a mapping; compare/fractions.py).
    finetune: float | str | dict = 0.25
    repeats: int = 2
    seed: int = 0
    patterns: str = "default"
    pairs: list[str] | None = None
    d_model: int = 64
    n_layers: int = 2
    max_len: int = 64
    vocab_size: int = 2048
    batch_size: int = 16
    lr: float = 3e-3
    documents: int = 100_000  # documents of --data read at most (drawn over all of it)
    eval_windows: int = 256
    eval_pairs: int = 200
    jobs: int = 1
    labels: str | None = None  # labelled records (text, label) for a classification task
    labels_valid: str | None = None  # its held-out records (default: every 10th of labels)
    labels_columns: dict | None = None  # the file's column for text or label: {"label": "genre"}
    labels_name: str = "genre"  # what the classification task is called in the table
    eval_labels: int = 2000  # held-out labelled records scored at most

    def check(self) -> None:
        for name in (
            "repeats",
            "d_model",
            "n_layers",
            "max_len",
            "vocab_size",
            "batch_size",
            "jobs",
            "documents",
            "eval_windows",
            "eval_pairs",
            "eval_labels",
        ):
            if getattr(self, name) < 1:
                raise TriformError(f"--{name}: expected a positive integer, got {getattr(self, name)}")
        if self.budget <= 0:
            raise TriformError(f"--budget: expected a positive budget, got {self.budget}")
        if self.max_len < 16:
            raise TriformError(f"--max_len: expected at least 16, got {self.max_len}")
        if self.labels and (self.labels_name in TASKS or not self.labels_name.replace("-", "").isalnum()):
            raise TriformError(
                f"--labels_name: expected a word that names no other task ({', '.join(TASKS)}), "
                f"got {self.labels_name!r}"
            )
        if self.labels_valid and not self.labels:
            raise TriformError("--labels_valid: held-out labelled records need --labels, the training records")
        self.fractions()  # a bad --finetune fails here, naming the task

    def tasks(self) -> list[str]:
        """The held-out tasks, in the order each run fine-tunes them."""
        return list(TASKS) + ([self.labels_name] if self.labels else [])

    def fractions(self) -> dict[str, float]:
        return finetune_fractions(self.finetune, self.tasks())

    def comparable(self) -> dict:
        """The settings that decide results: a folder made with others cannot be continued. One
        fraction for every task is kept as a number, and no labels as nothing, as before there were
        per-task fractions and labels, so that older comparisons continue."""
        values = asdict(self)
        for name in ("out", "jobs", "repeats", "pairs", "patterns"):
            values.pop(name)
        fractions = self.fractions()
        uniform = len(set(fractions.values())) == 1
        values["finetune"] = next(iter(fractions.values())) if uniform else fractions
        if not self.labels:
            for name in ("labels", "labels_valid", "labels_columns", "labels_name", "eval_labels"):
                values.pop(name)
        return values


def model_fields(settings: Settings) -> dict:
    return dict(
        d_model=settings.d_model,
        n_heads=4,
        d_ff=4 * settings.d_model,
        n_layers=settings.n_layers,
        max_len=settings.max_len,
        vocab_size=settings.vocab_size,
        dropout=0.0,
        attention_dropout=0.0,
    )


def check_folder(out: Path, settings: Settings) -> None:
    saved = out / SETTINGS_FILE
    if saved.is_file():
        previous = json.loads(saved.read_text())
        if previous != settings.comparable():
            changed = sorted(
                k for k in set(previous) | set(settings.comparable()) if previous.get(k) != settings.comparable().get(k)
            )
            raise TriformError(
                f"--out: {out} holds a comparison made with other settings ({', '.join(changed)}); "
                "choose another --out or delete it"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise TriformError(f"--out: {out} exists and is not a comparison's folder; choose another --out")


def compare(settings: Settings, show=None) -> dict:
    show = show or (lambda line: print(line, file=sys.stderr, flush=True))
    settings.check()
    chosen = entries(settings.patterns, settings.pairs)
    out = Path(settings.out)
    check_folder(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / SETTINGS_FILE, json.dumps(settings.comparable(), indent=1))
    data = prepare_data(settings, out / "data", show)
    jobs = [
        make_job(settings, data, entry, settings.seed + repeat, out)
        for repeat in range(settings.repeats)
        for entry in chosen
    ]
    reference = no_model_scores(jobs[0], out)
    results = run_all(jobs, settings.jobs, show)
    outputs = write_outputs(results, chosen, settings, reference, out)
    written = findings(outputs["aggregate"], reference, outputs["labelled"])
    atomic_write(out / "findings.md", written + "\n")
    show(f"table: {outputs['markdown']}\nfindings: {out / 'findings.md'}\nplot: {outputs['plot']}")
    return {"results": results, **outputs, "findings": written}


def no_model_scores(job: Job, out: Path) -> dict:
    """The context-free guess and the copied input on the held-out tasks (computed once, kept)."""
    path = out / "reference.json"
    if not path.is_file():
        atomic_write(path, json.dumps(reference_scores(job), indent=1))
    return json.loads(path.read_text())


def make_job(settings: Settings, data: dict, entry: Entry, seed: int, out: Path) -> Job:
    return Job(
        entry,
        seed,
        str(out / "runs" / f"{entry.key}-seed{seed}"),
        data["text_train"],
        data["text_valid"],
        data["pairs_train"],
        data["pairs_valid"],
        data["tokenizer"],
        model_fields(settings),
        settings.budget,
        settings.fractions(),
        settings.batch_size,
        settings.lr,
        settings.eval_windows,
        settings.eval_pairs,
        labels_task=settings.labels_name if settings.labels else None,
        labels_train=data.get("labels_train"),
        labels_valid=data.get("labels_valid"),
        show=settings.jobs == 1,
        threads=1 if settings.jobs > 1 else None,
    )


def headline_scores(result: dict, job: Job) -> str:
    """Each task's headline score of one run, as the progress line shows it."""
    parts = []
    for name, path, percent in score_columns(job.labels_task):
        if name in HEADLINE.values() or name == f"{job.labels_task} accuracy":
            number = float(result[path[0]][path[1]])
            parts.append(f"{name} {100 * number:.1f} %" if percent else f"{name} {number:.1f}")
    return ", ".join(parts)


def run_all(jobs: list[Job], workers: int, show) -> list[dict]:
    """Run the jobs not yet done (those with a result.json are read back), in `workers` processes."""
    results, pending = [], []
    for job in jobs:
        done = Path(job.folder) / "result.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
        else:
            shutil.rmtree(job.folder, ignore_errors=True)  # an interrupted run starts again
            pending.append(job)
    if results:
        show(f"{len(results)} of {len(jobs)} runs already done in an earlier call; {len(pending)} to go")
    started = time.monotonic()

    def report(job: Job, result: dict, finished: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / finished * (len(pending) - finished)
        show(
            f"[{len(results)}/{len(jobs)}] {job.entry.label}, seed {job.seed}: {headline_scores(result, job)} "
            f"({duration(result['seconds'])}; ETA {duration(eta)})"
        )

    if workers == 1:
        for finished, job in enumerate(pending, 1):
            results.append(run_job(job))
            report(job, results[-1], finished)
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in pending}
        for finished, future in enumerate(as_completed(futures), 1):
            results.append(future.result())
            report(futures[future], results[-1], finished)
    return results
