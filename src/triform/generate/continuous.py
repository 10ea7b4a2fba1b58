"""Continuous batching (Yu et al. 2022, Orca's iteration-level scheduling): a request joins the running
batch at the next step and each of its rows leaves the batch as soon as it finishes, so that no row
waits for the longest one of a static batch and a freed slot is reused by the next request.

    batch = ContinuousBatch(model, layout, slots=32, decode=tokenizer_decode)
    request = batch.submit(prompt_ids, GenerationConfig(max_new_tokens=40, do_sample=True, seed=0))
    while batch.busy:
        for event in batch.step():   # one token for every running row
            ...

A step (1) drops the rows of cancelled requests, (2) admits waiting rows into free slots: their
prompts run once, together, through the model (an encoder-decoder encodes its sources there, once),
and their keys and values are copied into the slot cache (generate/slots.py), (3) chooses a token
for every row from its scores, exactly as greedy decoding and sampling do (generate/search.py), and
(4) runs the rows that go on through the model, one token each. A request gets what it gets alone:
the cache keeps rows independent, each row has its own penalties and its own seeded generator, and
sampling filters run per row. An exception in a forward pass is retried row by row (prompt by
prompt when admitting), so that it fails only the requests whose rows fail alone.

Beam search is not batched here: beams reorder at every step and a prompt decides only at the end;
`generate_ids` runs it as a static batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
from torch import Tensor

from triform.errors import TriformError
from triform.generate.compiled import compiled_method
from triform.generate.config import GenerationConfig
from triform.generate.engine import numerics, plan_rows
from triform.generate.logits import NEG_INF, warp
from triform.generate.precision import decoding_model
from triform.generate.search import Decode, Penalties, Row, StopStrings, finish, row_generators, sample
from triform.generate.session import start_session
from triform.generate.slots import SlotCache
from triform.objectives import PromptLayout


@dataclass(eq=False)
class Request:
    """One prompt and its decoding options; `rows` fill in as the batch runs (one per sample)."""

    prompt: list[int]
    config: GenerationConfig
    logprobs: int | None = None  # per new token, the log-probability of it and of the `logprobs` best
    tag: object = None  # the caller's own
    rows: list[Row] = field(default_factory=list)
    framed: list[int] = field(default_factory=list)
    stops: StopStrings | None = None
    error: BaseException | None = None
    cancelled: bool = False
    finished: int = 0  # rows done

    @property
    def done(self) -> bool:
        return self.error is not None or self.cancelled or self.finished == len(self.rows)


@dataclass
class Event:
    """What one step did to one row: a new token (with its log-probabilities when asked for), the row's
    end, or the request's failure."""

    request: Request
    sample: int
    token: int | None = None
    finished: bool = False
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class Running:
    """A row in a slot."""

    request: Request
    sample: int
    generator: torch.Generator | None
    penalties: Penalties | None
    n_generated: int = 0
    token: int | None = None  # the last token chosen, which the next forward pass reads

    @property
    def row(self) -> Row:
        return self.request.rows[self.sample]


class ContinuousBatch:
    def __init__(
        self,
        model,
        layout: PromptLayout,
        *,
        slots: int = 32,
        capacity: int | None = None,
        decode: Decode | None = None,
        precision: str = "auto",
        compile: bool = False,
    ):
        """`slots` rows run at once; each slot holds `capacity` positions (default 1.5 x max_len: room
        to shift rows before the shared left padding must be dropped). `decode` turns token ids into
        text, for stop strings. The model is put in evaluation mode. Under bf16 a batch gives what its
        requests give alone only to within rounding (products round by the batch's shape); in fp32
        exactly. `compile` runs the steps of the running rows compiled (generate/compiled.py); the
        prompts' passes stay eager."""
        if slots < 1:
            raise ValueError(f"slots: expected an integer >= 1, got {slots}")
        max_len = model.config.max_len
        capacity = capacity or max_len + max_len // 2
        if capacity < max_len:
            raise ValueError(f"capacity: expected at least the model's max_len {max_len}, got {capacity}")
        # `auto` is decided as a generation's is (generate/precision.py), for a full set of slots;
        # bf16 on a CPU runs the model's bf16 twin, whose cache is bf16 too
        model, precision = decoding_model(model, precision, slots)
        self.model, self.layout, self.decode, self.precision = model, layout, decode, precision
        method = "decode" if layout.arch == "encoder-decoder" else "forward"
        self.compiled_step = compiled_method(model, method) if compile else None
        self.cache = SlotCache(model, slots, capacity, cross=layout.arch == "encoder-decoder")
        self.running: list[Running] = []  # slot i holds running[i]
        self.waiting: deque[Running] = deque()
        self.logits: Tensor | None = None  # (n, V): the next scores of each running row
        self.segments = layout.segments and bool(model.config.token_types)

    # --- the caller's side -------------------------------------------------------------------------
    def submit(self, prompt: list[int], config: GenerationConfig, *, logprobs: int | None = None, tag=None) -> Request:
        """Queue a prompt (token ids, no special tokens); its rows join at the next steps with room."""
        if config.num_beams > 1:
            raise TriformError(
                "continuous batching decodes greedily or by sampling; beam search runs as a static batch"
            )
        if not config.use_cache:
            raise TriformError("continuous batching runs on the KV cache (use_cache = true)")
        framed, (row,) = plan_rows(self.model, self.layout, [prompt], config)
        request = Request(list(prompt), config, logprobs, tag, framed=framed[0])
        request.stops = StopStrings(config.stop, self.decode)
        n = config.num_return_sequences
        generators = row_generators([request.framed] * n, config.seed, n) if config.do_sample else [None] * n
        for sample_index in range(n):
            request.rows.append(Row(row.prompt_index, list(row.history), row.limit))
            self.waiting.append(Running(request, sample_index, generators[sample_index], self.penalties(request)))
        return request

    def cancel(self, request: Request) -> None:
        """The request's rows leave at the next step (a client that went away frees its slots)."""
        request.cancelled = True

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def n_running(self) -> int:
        return len(self.running)

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    def penalties(self, request: Request) -> Penalties | None:
        config = request.config
        if config.repetition_penalty == 1.0 and not config.no_repeat_ngram_size:
            return None  # min_new_tokens alone is applied to all such rows at once (`pick`)
        device = self.model.head.projection.weight.device
        return Penalties(
            config, [request.rows[0].history], self.model.config.vocab_size, device, self.layout.specials.eos
        )

    # --- one step ------------------------------------------------------------------------------------
    def step(self) -> list[Event]:
        """Admit waiting rows, choose one token for every running row, run those that go on. A caller
        that steps under bf16 keeps autocast's weight copies from one step to the next by holding
        `torch.autocast_increment_nesting()` raised (engine.step_by_step)."""
        if self.model.training:  # a served model is evaluated; set once, not at every step (a walk of every module)
            self.model.eval()
        with numerics(self.model, self.precision):
            return self._step()

    def _step(self) -> list[Event]:
        events: list[Event] = []
        self.remove([i for i, r in enumerate(self.running) if r.request.cancelled or r.request.error])
        self.waiting = deque(r for r in self.waiting if not (r.request.cancelled or r.request.error))
        events += self.admit()
        if not self.running:
            return events
        events += self.choose()
        self.remove([i for i, r in enumerate(self.running) if r.request.done or r.row.finish_reason is not None])
        events += self.advance([r.token for r in self.running])
        return events

    def fail(self, request: Request, error: BaseException) -> Event:
        request.error = error
        return Event(request, 0, finished=True, error=error)

    def admit(self) -> list[Event]:
        """Prefill waiting rows into the free slots, the rows of one request together."""
        free = self.cache.slots - len(self.running)
        joining: list[Running] = []
        while self.waiting and len(joining) < free:
            joining.append(self.waiting.popleft())
        if not joining:
            return []
        prompts = list(dict.fromkeys(r.request for r in joining))  # each prompt runs once for all its samples
        try:
            prefilled = [(prompts, *self.prefill([p.framed for p in prompts]))]
        except Exception:  # retried alone: the error is the prompt's own, or a failure of the batch
            prefilled = []
            for request in prompts:
                try:
                    prefilled.append(([request], *self.prefill([request.framed])))
                except Exception as error:
                    request.error = error
        events = [self.fail(p, p.error) for p in prompts if p.error is not None]
        for group, session, logits in prefilled:
            rows = [r for r in joining if r.request in group]
            self.cache.make_room(max(self.cached_length(r.request) for r in rows))
            index = [group.index(r.request) for r in rows]
            for running, row in zip(rows, index):
                length, source_length = self.cached_length(running.request), len(running.request.framed)
                self.cache.place(len(self.running), session.cache, row, length, source_length)
                self.running.append(running)
                self.cache.n = len(self.running)
            new = logits[index]
            self.logits = new if self.logits is None else torch.cat([self.logits, new])
        return events

    def cached_length(self, request: Request) -> int:
        """Positions a prompt fills in the self-attention cache: the framed prompt, or a decoder's start token."""
        return 1 if self.layout.arch == "encoder-decoder" else len(request.framed)

    def prefill(self, framed: list[list[int]]):
        session = start_session(self.model, self.layout, framed, 0)
        return session, session.start()

    def choose(self) -> list[Event]:
        """A token for every running row, as decode_steps chooses it (penalties, then greedy or the
        sampling filters); a row whose choice fails fails its request only."""
        scores = self.logits.float()
        chosen: list[int | None] = [None] * len(self.running)
        events: list[Event] = []
        for key, members in self.groups().items():
            try:
                picked = self.pick(scores, members, key)
            except Exception:
                picked = []
                for i in members:
                    try:
                        picked += self.pick(scores, [i], key)
                    except Exception as error:
                        events.append(self.fail(self.running[i].request, error))
                        picked.append(None)
            for i, token in zip(members, picked):
                chosen[i] = token
        for i, running in enumerate(self.running):
            request = running.request
            if chosen[i] is None or request.done:
                continue
            events.append(self.record(running, chosen[i], scores[i]))
        return events

    def groups(self) -> dict[tuple, list[int]]:
        """Rows that choose alike, so that their filters run as one batch: greedy, or sampling with
        the same temperature and filters."""
        groups: dict[tuple, list[int]] = {}
        for i, running in enumerate(self.running):
            c = running.request.config
            key = (c.temperature, c.top_k, c.top_p, c.min_p) if c.do_sample else ()
            groups.setdefault(key, []).append(i)
        return groups

    def pick(self, scores: Tensor, members: list[int], key: tuple) -> list[int]:
        rows = [self.running[i] for i in members]
        group = scores[members]
        eos = self.layout.specials.eos
        early = [
            j for j, r in enumerate(rows) if r.penalties is None and r.n_generated < r.request.config.min_new_tokens
        ]
        if early and eos is not None:  # [EOS] forbidden before min_new_tokens, as Penalties.apply does
            group[early, eos] = NEG_INF
        if any(r.penalties is not None for r in rows):
            group = torch.cat(
                [
                    r.penalties.apply(group[j : j + 1], r.n_generated) if r.penalties is not None else group[j : j + 1]
                    for j, r in enumerate(rows)
                ]
            )
        if not key:
            return group.argmax(-1).tolist()
        return sample(warp(group, *key), [r.generator for r in rows]).tolist()

    def record(self, running: Running, token: int, scores: Tensor) -> Event:
        request, row = running.request, running.row
        event = Event(request, running.sample, token)
        if request.logprobs is not None:
            logprobs = scores.log_softmax(-1)  # the model's own distribution, before penalties and filters
            event.logprob = float(logprobs[token])
            if request.logprobs:
                top = logprobs.topk(min(request.logprobs, logprobs.shape[-1]))
                event.top_logprobs = list(zip(top.indices.tolist(), top.values.tolist()))
        try:
            event.finished = finish(row, token, self.layout.specials.eos, request.stops)
        except Exception as error:  # a stop string that cannot be decoded, ...
            return self.fail(request, error)
        running.n_generated, running.token = running.n_generated + 1, token
        if running.penalties is not None:
            running.penalties.push([token])
        if event.finished:
            request.finished += 1
        return event

    def remove(self, slots: list[int]) -> None:
        """Free `slots`: the last running row moves into each, so that the running rows stay first."""
        for slot in sorted(slots, reverse=True):
            last = len(self.running) - 1
            if slot != last:
                self.cache.move(last, slot)
                self.running[slot] = self.running[last]
                self.logits[slot] = self.logits[last]
            self.running.pop()
            self.logits = self.logits[:last]
        self.cache.n = len(self.running)
        if not self.running:
            self.logits = None
            self.cache.emptied()

    def advance(self, tokens: list[int]) -> list[Event]:
        """Run every running row one token on; rows are retried alone if the batch fails."""
        if not self.running:
            return []
        self.cache.compact()
        device = self.model.head.projection.weight.device
        ids = torch.tensor(tokens, device=device)[:, None]  # (n, 1)
        try:
            self.logits = self.forward(ids, slice(0, len(self.running)))
            self.cache.width += 1
            return []
        except Exception:
            pass
        events, logits, failed = [], [], []
        for i, running in enumerate(self.running):
            try:
                logits.append(self.forward(ids[i : i + 1], slice(i, i + 1)))
            except Exception as error:
                events.append(self.fail(running.request, error))
                failed.append(i)
                logits.append(self.logits[i : i + 1])
        self.logits = torch.cat(logits)
        self.cache.width += 1
        self.remove(failed)
        return events

    def forward(self, ids: Tensor, rows: slice) -> Tensor:
        """(rows, V) next scores of `rows`, each reading `ids` (rows, 1) as its next token."""
        cache, view = self.cache, self.cache.view(rows)
        mask = cache.step_mask(rows)
        if self.layout.arch == "encoder-decoder":
            # The cross-attention keys and values are in the cache: the decoder needs no memory.
            logits = (self.compiled_step or self.model.decode)(
                ids,
                None,
                memory_padding_mask=cache.source_mask[rows, : cache.cross_width],
                padding_mask=mask,
                cache=view,
            )
        else:
            logits = (self.compiled_step or self.model)(
                ids,
                self.layout.pattern,
                padding_mask=mask,
                prefix_lengths=cache.prefix_end[rows] if self.layout.pattern == "prefix" else None,
                token_types=torch.ones_like(ids) if self.segments else None,
                cache=view,
            )
        return logits[:, -1]
