"""The training loop: one explicit loop, with an injected reporter and no hooks to override.

Each optimizer step takes one global batch, split into `grad_accum` micro-batches and, within each,
into the rows of every process. The loss is a sum over predicted targets divided by the count of
predicted targets in the whole global batch, so the gradient is the same whatever the split: one
process or several, with accumulation or without. What is trained (an objective or a task) is the
job's `problem` (train/problem.py); where progress goes is the reporter's business (reporting.py).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triform.data.batches import BatchOrder
from triform.errors import TriformError
from triform.kernels.loss import logits_released
from triform.nn.block import compile_blocks
from triform.precision import autocast, described
from triform.progress import count
from triform.train import checkpoint as ckpt
from triform.train.config import LoopConfig, OptimConfig
from triform.train.distributed import Processes, unwrap, wrap
from triform.train.optim import build_optimizer, build_scheduler
from triform.train.problem import EvalContext, Problem, share
from triform.train.reporting import Reporter, RunStart

MODULES_SEED = 1  # derived_seed(seed, MODULES_SEED): the initial weights of a problem's own modules


def derived_seed(*values: int) -> int:
    """A seed for (run seed, step, ...), so randomness never depends on what ran before."""
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


@dataclass
class Saved:
    """What a saved model folder holds besides the weights."""

    specials: Any
    tokenizer: Any
    extra: dict


@dataclass
class Job:
    """Everything one training needs: what to train (`problem`) on which model and data, how, and
    what its saved folders say. The model is built and initialised by the caller, with the run's
    seed, so that every process starts from the same weights."""

    problem: Problem
    model: torch.nn.Module
    train_data: Any  # len(), example(i), lengths()
    valid_data: Any | None
    loop: LoopConfig
    optim: OptimConfig
    saved: Saved
    description: str  # the first line of progress
    title: str  # of the loss plot
    bucket: bool = False  # batches of similar lengths (seq2seq pairs)
    data_name: str = "data"


class Trainer:
    def __init__(self, job: Job, processes: Processes, run_dir: Path, reporter: Reporter | None = None):
        self.job, self.processes, self.run_dir = job, processes, Path(run_dir)
        self.problem, self.loop, self.strategy = job.problem, job.loop, job.loop.strategy
        self.reporter = reporter if reporter is not None and processes.is_main else Reporter()
        if self.loop.batch_size // self.loop.grad_accum < processes.world_size:
            raise TriformError(
                f"train.batch_size: {self.loop.batch_size} / train.grad_accum {self.loop.grad_accum} "
                f"leaves fewer examples per micro-batch than the {processes.world_size} processes"
            )
        self.device = processes.device
        with torch.random.fork_rng(devices=[]):  # modules of the problem's own start from the run's seed alone
            torch.manual_seed(derived_seed(self.loop.seed, MODULES_SEED))
            trained = self.problem.training_module(job.model)
        # Modules the problem trains beside the model (train/problem.py): saved in the training state,
        # never in model folders, which hold `job.model` alone.
        self.body, self.companions = job.model, trained is not job.model
        if self.companions and self.strategy == "fsdp" and processes.distributed:
            raise TriformError(
                "train.strategy: fsdp shards the model alone, and this objective trains modules of its own "
                "beside it; use ddp"
            )
        if self.loop.compile_blocks:
            compile_blocks(job.model)
        self.model = wrap(trained.to(self.device), processes, self.strategy, find_unused=self.companions)
        if self.loop.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.model, job.optim, self.device)
        self.scheduler = build_scheduler(self.optimizer, job.optim, self.loop.steps)
        self.order = BatchOrder(
            job.train_data, self.loop.batch_size, self.loop.seed, bucket=job.bucket, name=job.data_name
        )
        self.autocast = partial(autocast, self.loop.precision, self.device)
        self.precision = described(self.loop.precision, self.device)  # as the run's first line shows it
        self.step, self.tokens, self.best, self.elapsed_before = 0, 0, math.inf, 0.0
        self.parts: dict[str, list[float]] = {}  # the log window's (loss sum, targets) of each named part
        # Micro-batches each named part made so far (a mixture's draws), in each saved folder's config.json.
        self.drawn: dict[str, int] = {}

    # ---- state -------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from the newest checkpoint of the run folder; False when there is none."""
        if self.processes.is_main:
            ckpt.remove_partial(self.run_dir)
        found = ckpt.checkpoints(self.run_dir)
        if not found:
            return False
        state = ckpt.load_checkpoint(found[-1], self.saved, self.optimizer, self.scheduler, strategy=self.strategy)
        if self.companions:
            ckpt.load_companions(unwrap(self.model), self.body, state, found[-1])
        self.step, self.tokens = state["step"], state["tokens"]
        self.best, self.elapsed_before = state["best"], state["elapsed"]
        self.drawn = dict(state.get("drawn", {}))  # in the training state: an adapter folder has no config.json
        self.reporter.message(f"resumed from {found[-1]} (step {self.step})")
        return True

    def save(self, elapsed: float) -> None:
        state = {"tokens": self.tokens, "best": self.best, "elapsed": elapsed, "seed": self.loop.seed}
        state["drawn"] = dict(self.drawn)  # a mixture's draws so far, counted on across a resume
        if self.companions:
            state[ckpt.COMPANIONS] = ckpt.companion_state(unwrap(self.model))
        ckpt.save_checkpoint(
            self.run_dir, self.step, self.saved, self.optimizer, self.scheduler, state, self.processes, **self.saving()
        )
        if self.processes.is_main:
            ckpt.prune(self.run_dir, self.loop.keep_last)

    @property
    def saved(self) -> torch.nn.Module:
        """What model folders hold: the trained module, or the model inside it beside the problem's own."""
        return self.body if self.companions else self.model

    def saving(self) -> dict:
        saved = self.job.saved
        extra = {**saved.extra, "step": self.step, **({"drawn": dict(self.drawn)} if self.drawn else {})}
        return dict(strategy=self.strategy, specials=saved.specials, tokenizer=saved.tokenizer, extra=extra)

    # ---- one step ----------------------------------------------------------------------------
    def local_batches(self, step: int) -> list:
        """This process's share of each micro-batch of the step's global batch."""
        examples = self.order.examples(step)
        micro = self.loop.batch_size // self.loop.grad_accum
        generator = torch.Generator().manual_seed(derived_seed(self.loop.seed, step))
        part = slice(*share(micro, self.processes.rank, self.processes.world_size))
        batches = []
        for m in range(self.loop.grad_accum):
            batch = self.problem.collate(examples[m * micro : (m + 1) * micro], generator, part)
            batches.append(batch.to(self.device))
        return batches

    def train_step(self, step: int) -> tuple[float, int, float]:
        """One optimizer step; returns (mean loss per predicted target, input tokens, gradient norm).
        The (loss sum, targets) of each named part of the step's batches (a mixture's: `Batch.part`)
        are added to `self.parts`, summed over processes, for the log."""
        batches = self.local_batches(step)
        targets = [self.problem.n_targets(b) for b in batches]  # each a count over the batch: done once
        n_inputs = sum(b.n_inputs for b in batches)
        total_targets, total_inputs = self.processes.sum([sum(targets), n_inputs])
        torch.manual_seed(derived_seed(self.loop.seed, step, self.processes.rank))  # dropout
        loss_sum, part_sums = 0.0, {}
        for index, (batch, batch_targets) in enumerate(zip(batches, targets)):
            last = index == len(batches) - 1
            with self.gradient_sync(last), self.autocast():
                outputs = self.model(**batch.model_inputs())
            # Sum over this micro-batch's targets / targets of the global batch; DDP averages over
            # processes, hence the world size.
            with logits_released():  # the gradient may take the logits' memory: they are not read again
                loss = self.problem.loss(outputs, batch) if batch_targets else zero_loss(outputs)
            del outputs  # the logits (tokens x vocabulary) are not kept through the backward pass and the update
            weight = batch_targets * self.processes.world_size / max(total_targets, 1)
            with self.gradient_sync(last):
                (loss * weight).backward()
            loss_sum += float(loss.detach()) * batch_targets
            part = getattr(batch, "part", None)
            if part is not None:
                self.drawn[part] = self.drawn.get(part, 0) + 1
                sums = part_sums.setdefault(part, [0.0, 0])
                sums[0], sums[1] = sums[0] + float(loss.detach()) * batch_targets, sums[1] + batch_targets
        grad_norm = float("nan")
        if self.job.optim.clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.job.optim.clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        (loss_sum,) = self.processes.sum([loss_sum])
        self.add_parts(part_sums)
        return loss_sum / max(total_targets, 1), int(total_inputs), grad_norm

    def add_parts(self, part_sums: dict) -> None:
        """Every process draws the same parts (the same generator), so the sums line up in name order."""
        if not part_sums:
            return
        names = sorted(part_sums)
        totals = self.processes.sum([value for name in names for value in part_sums[name]])
        for number, name in enumerate(names):
            window = self.parts.setdefault(name, [0.0, 0.0])
            window[0] += totals[2 * number]
            window[1] += totals[2 * number + 1]

    def gradient_sync(self, enabled: bool):
        """Skip the all-reduce on accumulation micro-batches before the last."""
        if enabled or not self.processes.distributed:
            return nullcontext()
        if self.strategy == "fsdp":
            return _FsdpNoSync(self.model)
        return self.model.no_sync()

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self) -> dict | None:
        if self.job.valid_data is None:
            return None
        micro = max(1, self.loop.batch_size // self.loop.grad_accum)
        context = EvalContext(micro, self.loop.eval_batches, self.processes, self.autocast, self.device)
        model = self.model if self.strategy == "fsdp" else unwrap(self.model)  # FSDP shards run together
        was_training = model.training
        model.eval()
        try:
            return self.problem.evaluate(model, self.job.valid_data, context)
        finally:
            model.train(was_training)

    def validate(self) -> None:
        result = self.evaluate()
        if result is None:
            return
        improved = self.problem.score(result) < self.best
        if improved:
            self.best = self.problem.score(result)
            ckpt.save_plain(self.run_dir, ckpt.BEST, self.saved, self.processes, **self.saving())
        self.reporter.valid({"step": self.step, **result}, self.problem.summary(result), improved)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, should_stop=lambda: False) -> str:
        """Train until train.steps, train.time_limit or `should_stop()`; returns 'done' or 'stopped'."""
        loop = self.loop
        if self.step >= loop.steps:
            if not (self.run_dir / ckpt.FINAL).is_dir():  # stopped between its last checkpoint and the final save
                ckpt.save_plain(self.run_dir, ckpt.FINAL, self.saved, self.processes, **self.saving())
            self.reporter.message(f"{self.run_dir}: already trained for {self.step} steps (train.steps {loop.steps})")
            return "done"
        self.reporter.start(self.run_start())
        outcome = "stopped"
        try:
            outcome = self.steps(should_stop)
        finally:
            self.reporter.finish(outcome)
        return outcome

    def steps(self, should_stop) -> str:
        loop = self.loop
        started, self.start_step = time.monotonic(), self.step
        window_start, window_tokens, window_losses = started, 0, []
        while self.step < loop.steps:
            loss, tokens, grad_norm = self.train_step(self.step)
            self.step += 1
            self.tokens += tokens
            window_tokens += tokens
            window_losses.append(loss)
            now = time.monotonic()
            if self.step % loop.log_every == 0 or self.step == loop.steps:
                rate = window_tokens / max(now - window_start, 1e-9)
                self.reporter.train(self.train_record(float(np.mean(window_losses)), rate, grad_norm, now - started))
                window_start, window_tokens, window_losses, self.parts = now, 0, [], {}
            if self.step % loop.eval_every == 0 or self.step == loop.steps:
                self.validate()
            out_of_time = loop.time_limit is not None and self.elapsed_before + now - started >= loop.time_limit * 60
            stop = self.processes.any(should_stop() or out_of_time)
            if stop or self.step % loop.checkpoint_every == 0 or self.step == loop.steps:
                self.save(self.elapsed_before + time.monotonic() - started)
            if stop:
                self.reporter.message(
                    f"stopped at step {self.step}; checkpoint saved in {ckpt.checkpoint_dir(self.run_dir, self.step)}; "
                    "rerun with --resume true to continue"
                )
                return "stopped"
        ckpt.save_plain(self.run_dir, ckpt.FINAL, self.saved, self.processes, **self.saving())
        self.reporter.message(
            f"done: {self.step} steps, {count(self.tokens)} tokens; model saved in {self.run_dir / ckpt.FINAL}"
        )
        if self.drawn:
            drawn = ", ".join(f"{n} {name}" for name, n in sorted(self.drawn.items()))
            self.reporter.message(f"micro-batches drawn: {drawn}")
        return "done"

    def run_start(self) -> RunStart:
        parameters = list(unwrap(self.model).parameters())
        n_parameters = sum(p.numel() for p in parameters)  # an FSDP shard counts whole
        n_trained = sum(p.numel() for p in parameters if p.requires_grad)
        trained = f" ({count(n_trained)} trained)" if n_trained < n_parameters else ""
        description = (
            f"{self.job.description}: {count(n_parameters)} parameters{trained}, {len(self.job.train_data)} training "
            f"examples, {self.processes.world_size} process(es) on {self.device.type}, {self.precision}, "
            f"run folder {self.run_dir}"
        )
        return RunStart(description, self.loop.steps, self.step, self.run_dir, self.job.title)

    def train_record(self, loss: float, rate: float, grad_norm: float, elapsed: float) -> dict:
        per_step = elapsed / max(self.step - self.start_step, 1)
        eta = (self.loop.steps - self.step) * per_step
        if self.loop.time_limit is not None:
            eta = min(eta, self.loop.time_limit * 60 - self.elapsed_before - elapsed)
        lr = self.scheduler.get_last_lr()[0]
        losses = {name: total / count for name, (total, count) in sorted(self.parts.items()) if count}
        return dict(
            step=self.step,
            loss=loss,
            lr=lr,
            tokens=self.tokens,
            tokens_per_s=rate,
            grad_norm=grad_norm,
            elapsed_s=self.elapsed_before + elapsed,
            eta_s=eta,
            **({"losses": losses} if losses else {}),
        )


def zero_loss(outputs) -> torch.Tensor:
    """A loss of 0 that still reaches every parameter the outputs came from (a process whose share of
    a micro-batch predicts nothing must take part in the gradient all-reduce)."""
    tensors = outputs if isinstance(outputs, tuple) else (outputs,)
    return sum(t.float().sum() * 0.0 for t in tensors)


class _FsdpNoSync:
    """FSDP2's way of accumulating gradients locally: turn gradient reduction off for a backward."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.set_requires_gradient_sync(False)

    def __exit__(self, *exc):
        self.model.set_requires_gradient_sync(True)
