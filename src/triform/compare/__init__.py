"""`triform compare`: the T5 paper's Table 2 (Raffel et al. 2020) in miniature, on your text.

Every allowed architecture x objective pair is pretrained on the same data with the same compute
(tokens x parameters), then fine-tuned for each held-out task with the same smaller budget and
scored: next token, masked token, and a sequence-to-sequence task made from the text. Several seeds
give error bars. Outputs: results.csv (one row per run), table.md and table.csv (mean ± standard
deviation per pair), compare.png, and each run's folder with its models and metrics.
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

from triform.compare.plan import Entry, entries
from triform.compare.runner import Job, reference_scores, run_job
from triform.compare.setup import prepare_data
from triform.compare.table import write_outputs
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
    finetune: float = 0.25  # each task's fine-tuning budget, as a fraction of the pretraining budget
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
        ):
            if getattr(self, name) < 1:
                raise TriformError(f"--{name}: expected a positive integer, got {getattr(self, name)}")
        if self.budget <= 0 or not 0 < self.finetune <= 10:
            raise TriformError(
                f"--budget and --finetune: expected a positive budget and a fraction in (0, 10], "
                f"got {self.budget} and {self.finetune}"
            )
        if self.max_len < 16:
            raise TriformError(f"--max_len: expected at least 16, got {self.max_len}")

    def comparable(self) -> dict:
        """The settings that decide results: a folder made with others cannot be continued."""
        values = asdict(self)
        for name in ("out", "jobs", "repeats", "pairs", "patterns"):
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
    show(f"table: {outputs['markdown']}\nplot: {outputs['plot']}")
    return {"results": results, **outputs}


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
        settings.finetune * settings.budget,
        settings.batch_size,
        settings.lr,
        settings.eval_windows,
        settings.eval_pairs,
        show=settings.jobs == 1,
        threads=1 if settings.jobs > 1 else None,
    )


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
            f"[{len(results)}/{len(jobs)}] {job.entry.label}, seed {job.seed}: next-token "
            f"{100 * result['next-token']['accuracy']:.1f} %, "
            f"masked-token {100 * result['masked-token']['accuracy']:.1f} %, restore chrF "
            f"{result['restore']['chrf']:.1f} "
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
