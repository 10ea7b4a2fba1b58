"""One thread per model runs everything the model computes, so that concurrent requests become batches:

- decoding (greedy and sampling) by continuous batching (generate/continuous.py): a request joins the
  running batch at the next step, and leaves it when it ends, is cancelled or its client goes away;
- beam search as a static batch of the requests with the same options (beams reorder every step);
- embeddings, fill-mask and task predictions as batches of whatever requests of the same kind and
  options are waiting when the model is free.

The HTTP side talks to the thread through a queue of messages; the thread answers each request's
`Ticket` (an asyncio queue, fed thread-safely) with pieces of text, results or the error. A batch
that fails is run again request by request, so that an error fails only the request it belongs to.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from triform.generate import GenerationConfig, generate_ids
from triform.generate.continuous import ContinuousBatch, Event
from triform.generate.engine import numerics
from triform.generate.pieces import Pieces, row_text
from triform.models.modes import evaluation


@dataclass
class Piece:
    """New text of one output (prompt, sample), with the token that made it when the tokens are known."""

    prompt: int
    sample: int
    text: str
    token: int | None = None  # None: no token (the final [EOS], or a beam's whole text at once)
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # set on the output's last piece: "eos", "stop" or "length"
    n_tokens: int = 0  # tokens generated so far, [EOS] included


@dataclass
class Result:
    value: object


@dataclass
class Failed:
    error: BaseException


class Ticket:
    """What the HTTP handler of one request reads its answers from, in its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.items = loop, asyncio.Queue()
        self.started = False  # the worker began on it (left the queue)
        self.closed = False

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.items.put_nowait, item)


def deliver(pairs: list[tuple[Ticket, object]]) -> None:
    """In the event loop: hand each item to its ticket."""
    for ticket, item in pairs:
        ticket.items.put_nowait(item)


@dataclass
class Job:
    """A batchable call: `run(all inputs of the jobs with this key) -> one output per input`."""

    key: tuple
    run: Callable[[list], list]
    inputs: list
    ticket: Ticket


class ModelWorker:
    def __init__(
        self, served, *, slots: int, queue_size: int, precision: str = "fp32", compile: bool = False, metrics=None
    ):
        self.served, self.precision, self.compile, self.metrics = served, precision, compile, metrics
        self.queue_size = queue_size
        generator = served.generator
        self.batch = None
        if generator is not None and not generator.fills_masks:
            self.batch = ContinuousBatch(
                served.model,
                generator.layout,
                slots=slots,
                decode=generator.decode,
                precision=precision,
                compile=compile,
            )
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.queued = 0  # requests accepted and not yet started
        self.seconds_per_request = 1.0  # a running mean, for Retry-After
        self.jobs: list[Job] = []
        self.beams: list[tuple[Ticket, list[list[int]], GenerationConfig]] = []
        self.tickets: dict[Ticket, list] = {}  # a decoding ticket's requests in the batch
        self.outputs_left: dict[Ticket, int] = {}
        self.pieces: dict[object, list[Pieces]] = {}
        self.outbox: list[tuple[Ticket, object]] = []  # what a step answers, delivered together
        self.stopping = False
        self.thread = threading.Thread(target=self.run, name=f"model-{served.name}", daemon=True)

    # --- the HTTP side (event loop thread) ---------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self.stopping = True
        self.inbox.put(("wake",))
        self.thread.join(timeout)

    def accept(self) -> bool:
        """Take one more request unless the queue is full."""
        with self.lock:
            if self.queued >= self.queue_size:
                return False
            self.queued += 1
            return True

    def retry_after(self) -> int:
        """Seconds until the queue has room, roughly: its requests over the slots, at the mean duration."""
        slots = self.batch.cache.slots if self.batch is not None else 1
        return max(1, math.ceil(self.queued / slots * self.seconds_per_request))

    def generate(self, ticket: Ticket, prompts: list[list[int]], config: GenerationConfig, logprobs=None) -> None:
        self.inbox.put(("generate", ticket, prompts, config, logprobs))

    def submit(self, job: Job) -> None:
        self.inbox.put(("job", job))

    def cancel(self, ticket: Ticket) -> None:
        ticket.closed = True
        self.inbox.put(("cancel", ticket))

    # --- the model's thread ------------------------------------------------------------------------
    def run(self) -> None:
        torch.autocast_increment_nesting()  # bf16 copies of the weights are kept from one step to the next
        try:
            while True:
                busy = self.jobs or self.beams or (self.batch is not None and self.batch.busy)
                if not self.take(block=not busy) and self.stopping and not busy:
                    return
                self.run_jobs()
                self.run_beams()
                if self.batch is not None and self.batch.busy:
                    self.step()
        finally:
            if torch.autocast_decrement_nesting() == 0:
                torch.clear_autocast_cache()

    def take(self, block: bool) -> bool:
        """Read the inbox (waiting for a message when idle); False when it was empty."""
        try:
            messages = [self.inbox.get(timeout=0.2) if block else self.inbox.get_nowait()]
        except queue.Empty:
            return False
        while True:
            try:
                messages.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        for kind, *values in messages:
            if kind == "generate":
                self.enqueue(*values)
            elif kind == "job":
                self.jobs.append(values[0])
            elif kind == "cancel":
                self.drop(values[0])
        return True

    def started(self, ticket: Ticket) -> None:
        if not ticket.started:
            ticket.started = True
            with self.lock:
                self.queued -= 1

    def finished(self, ticket: Ticket, began: float) -> None:
        self.seconds_per_request = 0.9 * self.seconds_per_request + 0.1 * (time.monotonic() - began)

    def enqueue(self, ticket: Ticket, prompts: list[list[int]], config: GenerationConfig, logprobs) -> None:
        if ticket.closed:
            self.started(ticket)
            return
        if config.num_beams > 1:
            self.beams.append((ticket, prompts, config))
            return
        requests = []
        try:
            for index, prompt in enumerate(prompts):
                request = self.batch.submit(prompt, config, logprobs=logprobs, tag=(ticket, index, time.monotonic()))
                self.pieces[request] = [Pieces(self.served.decode, request.stops) for _ in request.rows]
                requests.append(request)
        except Exception as error:
            for request in requests:
                self.forget(request)
            self.started(ticket)
            ticket.put(Failed(error))
            return
        self.tickets[ticket] = requests
        self.outputs_left[ticket] = sum(len(r.rows) for r in requests)

    def drop(self, ticket: Ticket) -> None:
        """A cancelled ticket's rows leave the batch at the next step; its queued jobs are dropped."""
        for request in self.tickets.pop(ticket, []):
            self.batch.cancel(request)
            self.pieces.pop(request, None)
        self.outputs_left.pop(ticket, None)
        self.jobs = [job for job in self.jobs if job.ticket is not ticket]
        self.beams = [beam for beam in self.beams if beam[0] is not ticket]
        self.started(ticket)

    def forget(self, request) -> None:
        self.batch.cancel(request)
        self.pieces.pop(request, None)

    def step(self) -> None:
        began = time.monotonic()
        events = self.batch.step()
        if self.metrics is not None:
            self.metrics.step(self.served.name, self.batch.n_running, time.monotonic() - began, self.queued)
        self.outbox = []
        for event in events:
            self.dispatch(event)
        # One wake-up of the event loop per step, not one per row: at 32 rows that was the server's cost.
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for ticket, item in self.outbox:
            by_loop.setdefault(ticket.loop, []).append((ticket, item))
        for loop, pairs in by_loop.items():
            loop.call_soon_threadsafe(deliver, pairs)

    def dispatch(self, event: Event) -> None:
        request = event.request
        ticket, index, began = request.tag
        self.started(ticket)
        if ticket not in self.tickets:
            return
        if event.error is not None:
            for other in self.tickets.pop(ticket):
                self.forget(other)
            del self.outputs_left[ticket]
            ticket.put(Failed(event.error))
            return
        row = request.rows[event.sample]
        piece = self.pieces[request][event.sample].next(row)
        reason = row.finish_reason if event.finished else None
        in_text = not (event.finished and reason == "eos")
        token = event.token if in_text else None
        n_tokens = len(row.tokens) + (reason == "eos")
        self.outbox.append(
            (ticket, Piece(index, event.sample, piece, token, event.logprob, event.top_logprobs, reason, n_tokens))
        )
        if event.finished:
            self.outputs_left[ticket] -= 1
            if not self.outputs_left[ticket]:  # every output of every prompt has been answered
                for other in self.tickets.pop(ticket):
                    self.pieces.pop(other, None)
                del self.outputs_left[ticket]
                self.finished(ticket, began)

    # --- batches of everything else ------------------------------------------------------------------
    def run_jobs(self) -> None:
        """Every waiting job, as one call per key (a kind and its options)."""
        jobs, self.jobs = self.jobs, []
        by_key: dict[tuple, list[Job]] = {}
        for job in jobs:
            by_key.setdefault(job.key, []).append(job)
        for group in by_key.values():
            for job in group:
                self.started(job.ticket)
            began = time.monotonic()
            try:
                outputs = self.compute(group[0].run, [x for job in group for x in job.inputs])
            except Exception:  # run alone: only the job whose inputs fail gets the error
                for job in group:
                    try:
                        job.ticket.put(Result(self.compute(job.run, job.inputs)))
                    except Exception as error:
                        job.ticket.put(Failed(error))
                continue
            if self.metrics is not None:
                self.metrics.batch(self.served.name, group[0].key[0], len(outputs), time.monotonic() - began)
            start = 0
            for job in group:
                job.ticket.put(Result(outputs[start : start + len(job.inputs)]))
                start += len(job.inputs)

    def compute(self, run: Callable[[list], list], inputs: list) -> list:
        with evaluation(self.served.model), numerics(self.served.model, self.precision):
            outputs = run(inputs)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"a batch of {len(inputs)} inputs gave {len(outputs)} outputs")
        return outputs

    def run_beams(self) -> None:
        """Beam search, one static batch per set of options."""
        beams, self.beams = self.beams, []
        by_config: dict[GenerationConfig, list] = {}
        for beam in beams:
            by_config.setdefault(beam[2], []).append(beam)
        generator = self.served.generator
        for config, group in by_config.items():
            for ticket, _, _ in group:
                self.started(ticket)

            compiled = config.replace(compile=self.compile)

            def search(prompts, config=compiled):
                return generate_ids(self.served.model, generator.layout, prompts, config, decode=generator.decode)

            def answer(ticket: Ticket, rows, n=config.num_return_sequences) -> None:
                for position, row in enumerate(rows):  # prompt-major, n rows per prompt
                    text, n_tokens = row_text(row, generator.decode), len(row.tokens) + (row.finish_reason == "eos")
                    ticket.put(
                        Piece(position // n, position % n, text, finish_reason=row.finish_reason, n_tokens=n_tokens)
                    )

            try:
                rows = search([p for _, prompts, _ in group for p in prompts])
            except Exception:
                for ticket, prompts, _ in group:
                    try:
                        answer(ticket, search(prompts))
                    except Exception as error:
                        ticket.put(Failed(error))
                continue
            start = 0
            for ticket, prompts, _ in group:
                mine = rows[start : start + len(prompts) * config.num_return_sequences]
                answer(ticket, mine)
                start += len(mine)
