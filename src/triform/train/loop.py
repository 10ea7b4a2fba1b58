"""The training loop: one explicit loop, no callbacks.

Each optimizer step takes one global batch, split into `grad_accum` micro-batches and, within each,
into the rows of every process. The loss is a sum over predicted tokens divided by the count of
predicted tokens in the whole global batch, so the gradient is the same whatever the split: one
process or several, with accumulation or without.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch

from triform.data.batches import BatchOrder, PairData
from triform.errors import TriformError
from triform.models import build_model
from triform.precision import autocast, resolved_name
from triform.progress import count, duration, say
from triform.train import checkpoint as ckpt
from triform.train.batching import prepare, rows, share
from triform.train.distributed import Processes, wrap
from triform.train.evaluate import evaluate_loss
from triform.train.metrics import MetricsLog, plot_losses
from triform.train.optim import build_optimizer, build_scheduler
from triform.train.session import Session


def derived_seed(*values: int) -> int:
    """A seed for (run seed, step, ...), so randomness never depends on what ran before."""
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


def batch_order(session: Session, batch_size: int, seed: int) -> BatchOrder:
    """The order of the training batches: seq2seq pairs bucketed by length unless data.bucket is off."""
    data = session.train_data
    wanted = getattr(session.resolved.config.data, "bucket", True)  # a task's data config has no such field
    bucket = wanted and isinstance(data, PairData)
    return BatchOrder(data, batch_size, seed, bucket=bucket, name=str(session.resolved.config.data.train))


class Trainer:
    def __init__(self, session: Session, processes: Processes, run_dir: Path):
        self.session, self.processes, self.run_dir = session, processes, Path(run_dir)
        config = session.resolved.config
        self.loop, self.strategy = config.train, config.train.strategy
        if self.loop.batch_size // self.loop.grad_accum < processes.world_size:
            raise TriformError(
                f"train.batch_size: {self.loop.batch_size} / train.grad_accum {self.loop.grad_accum} "
                f"leaves fewer examples per micro-batch than the {processes.world_size} processes"
            )
        self.device = processes.device
        torch.manual_seed(self.loop.seed)  # the same initial weights on every process
        model = self.new_model().to(self.device)
        self.model = wrap(model, processes, self.strategy)
        if self.loop.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.model, config.optim, self.device)
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.loop.steps)
        self.order = batch_order(session, self.loop.batch_size, self.loop.seed)
        self.autocast = partial(autocast, self.loop.precision, self.device)
        self.precision = resolved_name(self.loop.precision, self.device)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", processes.is_main)
        self.step, self.tokens, self.best, self.elapsed_before = 0, 0, math.inf, 0.0

    def say(self, line: str) -> None:
        """A progress line of the main process (stderr); a subclass may show progress its own way."""
        say(line)

    def new_model(self) -> torch.nn.Module:
        """The model to train: built from the session's config (fine-tuning starts from a pretrained body)."""
        return build_model(self.session.model_config)

    # ---- state -------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from the newest checkpoint of the run folder; False when there is none."""
        if self.processes.is_main:
            ckpt.remove_partial(self.run_dir)
        found = ckpt.checkpoints(self.run_dir)
        if not found:
            return False
        state = ckpt.load_checkpoint(found[-1], self.model, self.optimizer, self.scheduler, strategy=self.strategy)
        self.step, self.tokens = state["step"], state["tokens"]
        self.best, self.elapsed_before = state["best"], state["elapsed"]
        self.metrics.keep_until(self.step)
        if self.processes.is_main:
            self.say(f"resumed from {found[-1]} (step {self.step})")
        return True

    def save(self, elapsed: float) -> None:
        state = {"tokens": self.tokens, "best": self.best, "elapsed": elapsed, "seed": self.loop.seed}
        ckpt.save_checkpoint(
            self.run_dir, self.step, self.model, self.optimizer, self.scheduler, state, self.processes, **self.saving()
        )
        if self.processes.is_main:
            ckpt.prune(self.run_dir, self.loop.keep_last)

    def saving(self) -> dict:
        extra = {**self.session.extra(), "step": self.step}
        return dict(
            strategy=self.strategy, specials=self.session.specials, tokenizer=self.session.tokenizer, extra=extra
        )

    # ---- one step ----------------------------------------------------------------------------
    def local_batches(self, step: int) -> list:
        examples = self.order.examples(step)
        micro = self.loop.batch_size // self.loop.grad_accum
        generator = torch.Generator().manual_seed(derived_seed(self.loop.seed, step))
        start, stop = share(micro, self.processes.rank, self.processes.world_size)
        batches = []
        for m in range(self.loop.grad_accum):
            batch = prepare(
                self.session.objective, examples[m * micro : (m + 1) * micro], generator, self.session.word_table
            )
            batches.append(rows(batch, start, stop).to(self.device))
        return batches

    def train_step(self, step: int) -> tuple[float, int, float]:
        """One optimizer step; returns (mean loss per predicted token, input tokens, gradient norm)."""
        batches = self.local_batches(step)
        targets = [b.n_targets for b in batches]  # each a count over the batch: done once
        n_targets = sum(targets)
        n_inputs = sum(int(b.ids.numel() if b.padding_mask is None else b.padding_mask.sum()) for b in batches)
        n_inputs += sum(int(b.source_ids.numel()) for b in batches if b.source_ids is not None)
        total_targets, total_inputs = self.processes.sum([n_targets, n_inputs])
        torch.manual_seed(derived_seed(self.loop.seed, step, self.processes.rank))  # dropout
        loss_sum = 0.0
        for index, (batch, batch_targets) in enumerate(zip(batches, targets)):
            last = index == len(batches) - 1
            with self.gradient_sync(last), self.autocast():
                logits = self.model(**batch.model_inputs())
            # Sum over this micro-batch's tokens / tokens of the global batch; DDP averages over
            # processes, hence the world size.
            loss = self.session.objective.loss(logits, batch) if batch_targets else logits.float().sum() * 0.0
            weight = batch_targets * self.processes.world_size / max(total_targets, 1)
            with self.gradient_sync(last):
                (loss * weight).backward()
            loss_sum += float(loss.detach()) * batch_targets
        grad_norm = float("nan")
        if self.session.resolved.config.optim.clip:
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.session.resolved.config.optim.clip)
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        (loss_sum,) = self.processes.sum([loss_sum])
        return loss_sum / max(total_targets, 1), int(total_inputs), grad_norm

    def gradient_sync(self, enabled: bool):
        """Skip the all-reduce on accumulation micro-batches before the last."""
        if enabled or not self.processes.distributed:
            return nullcontext()
        if self.strategy == "fsdp":
            return _FsdpNoSync(self.model)
        return self.model.no_sync()

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self) -> dict | None:
        if self.session.valid_data is None:
            return None
        micro = max(1, self.loop.batch_size // self.loop.grad_accum)
        result = evaluate_loss(
            self.model,
            self.session.objective,
            self.session.valid_data,
            batch_size=micro,
            limit=self.loop.eval_batches,
            processes=self.processes,
            autocast=self.autocast,
            word_table=self.session.word_table,
            device=self.device,
        )
        return result

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, should_stop=lambda: False) -> str:
        """Train until train.steps, train.time_limit or `should_stop()`; returns 'done' or 'stopped'."""
        main, loop = self.processes.is_main, self.loop
        if self.step >= loop.steps:
            if not (self.run_dir / ckpt.FINAL).is_dir():  # stopped between its last checkpoint and the final save
                ckpt.save_plain(self.run_dir, ckpt.FINAL, self.model, self.processes, **self.saving())
            if main:
                self.say(f"{self.run_dir}: already trained for {self.step} steps (train.steps {loop.steps})")
            return "done"
        if main:
            self.announce()
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
                self.log_train(float(np.mean(window_losses)), rate, grad_norm, now - started)
                window_start, window_tokens, window_losses = now, 0, []
            if self.step % loop.eval_every == 0 or self.step == loop.steps:
                self.log_valid()
            out_of_time = loop.time_limit is not None and self.elapsed_before + now - started >= loop.time_limit * 60
            stop = self.processes.any(should_stop() or out_of_time)
            if stop or self.step % loop.checkpoint_every == 0 or self.step == loop.steps:
                self.save(self.elapsed_before + time.monotonic() - started)
            if stop:
                if main:
                    self.say(
                        f"stopped at step {self.step}; checkpoint saved in "
                        f"{ckpt.checkpoint_dir(self.run_dir, self.step)}; "
                        "rerun with --resume true to continue"
                    )
                return "stopped"
        ckpt.save_plain(self.run_dir, ckpt.FINAL, self.model, self.processes, **self.saving())
        if main:
            self.say(
                f"done: {self.step} steps, {count(self.tokens)} tokens; model saved in {self.run_dir / ckpt.FINAL}"
            )
        return "done"

    def announce(self) -> None:
        model = self.session.model_config
        with torch.device("meta"):  # count without allocating: under FSDP each process holds a shard only
            n_parameters = sum(p.numel() for p in build_model(model).parameters())
        resolved = self.session.resolved
        self.say(
            f"training {resolved.model.arch} + {resolved.objective} + {resolved.pattern}: {count(n_parameters)} "
            "parameters, "
            f"vocab {model.vocab_size}, {len(self.session.train_data)} training examples, {self.processes.world_size} "
            f"process(es) on {self.device.type}, {self.precision}, run folder {self.run_dir}"
        )

    def log_train(self, loss: float, rate: float, grad_norm: float, elapsed: float) -> None:
        lr = self.scheduler.get_last_lr()[0]
        record = {
            "split": "train",
            "step": self.step,
            "loss": loss,
            "lr": lr,
            "tokens": self.tokens,
            "tokens_per_s": rate,
            "grad_norm": grad_norm,
            "elapsed_s": self.elapsed_before + elapsed,
        }
        self.metrics.write(record)
        if self.processes.is_main:
            per_step = elapsed / max(self.step - self.start_step, 1)
            eta = (self.loop.steps - self.step) * per_step
            if self.loop.time_limit is not None:
                eta = min(eta, self.loop.time_limit * 60 - self.elapsed_before - elapsed)
            self.say(
                f"step {self.step}/{self.loop.steps} | loss {loss:.4f} | lr {lr:.2e} | {count(rate)} tok/s | "
                f"{duration(self.elapsed_before + elapsed)} elapsed | ETA {duration(eta)}"
            )

    def log_valid(self) -> None:
        result = self.evaluate()
        if result is None:
            return
        self.metrics.write({"split": "valid", "step": self.step, **result})
        improved = self.score(result) < self.best
        if improved:
            self.best = self.score(result)
            ckpt.save_plain(self.run_dir, ckpt.BEST, self.model, self.processes, **self.saving())
        if self.processes.is_main:
            plot_losses(self.metrics.read(), self.run_dir / "loss.png", self.plot_title())
            self.say(
                f"validation at step {self.step}: {self.valid_line(result)}" + (" | best so far" if improved else "")
            )

    def score(self, result: dict) -> float:
        """What picks the best checkpoint, lower is better: the validation loss."""
        return result["loss"]

    def valid_line(self, result: dict) -> str:
        loss, perplexity, accuracy = result["loss"], result["perplexity"], 100 * result["accuracy"]
        return f"loss {loss:.4f} | perplexity {perplexity:.2f} | accuracy {accuracy:.1f}%"

    def plot_title(self) -> str:
        resolved = self.session.resolved
        return f"{resolved.config.preset or resolved.model.arch} + {resolved.objective}"


class _FsdpNoSync:
    """FSDP2's way of accumulating gradients locally: turn gradient reduction off for a backward."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.set_requires_gradient_sync(False)

    def __exit__(self, *exc):
        self.model.set_requires_gradient_sync(True)
