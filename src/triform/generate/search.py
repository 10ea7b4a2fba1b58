"""Greedy decoding and sampling: one token per row per step, until [EOS], a stop string or the limit.

`decode_steps` is a generator that yields each step's new tokens, so that streaming and plain
generation are one loop. Finished rows leave the batch at once (the session drops their cache rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from triform.generate.config import GenerationConfig
from triform.generate.logits import NEG_INF, NgramBlocker, forbid, repetition_penalty, warp

Decode = Callable[[list[int]], str]


@dataclass
class Row:
    """One output sequence being generated."""

    prompt_index: int
    history: list[int]  # what the penalties look back on: the sequence being continued (Layout.history)
    limit: int  # most tokens this row may add (max_new_tokens, or less where max_len is near)
    tokens: list[int] = field(default_factory=list)  # generated so far, [EOS] excluded
    finish_reason: str | None = None  # "eos", "stop" or "length"
    stop_at: int | None = None  # characters of the decoded text kept when a stop string ended it
    score: float | None = None  # beam search: the length-normalised log-probability


class StopStrings:
    """Multi-token stop strings, matched on the decoded text, so that a stop string is found
    however the tokenizer splits it."""

    def __init__(self, stops: tuple[str, ...], decode: Decode | None):
        if stops and decode is None:
            raise ValueError("stop strings need a tokenizer to decode the generated tokens")
        self.stops, self.decode = stops, decode

    def find(self, tokens: list[int]) -> int | None:
        """Index of the first character of the earliest stop string in the text of `tokens`."""
        if not self.stops:
            return None
        text = self.decode(tokens)
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        return min(found) if found else None

    def partial(self, text: str) -> int:
        """Length of the longest end of `text` that could begin a stop string (held back when streaming)."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest


class Penalties:
    """Repetition penalty, no-repeat-n-gram and min_new_tokens, with the per-row state they need."""

    def __init__(self, config: GenerationConfig, histories: list[list[int]], vocab_size: int, device, eos: int | None):
        self.config, self.eos = config, eos
        self.seen = None
        if config.repetition_penalty != 1.0:
            self.seen = torch.zeros(len(histories), vocab_size, dtype=torch.bool, device=device)
            for row, history in enumerate(histories):
                self.seen[row, history] = True
        self.blockers = None
        if config.no_repeat_ngram_size:
            self.blockers = [NgramBlocker(config.no_repeat_ngram_size, h) for h in histories]

    def apply(self, logits: Tensor, n_generated: int) -> Tensor:
        if self.seen is not None:
            logits = repetition_penalty(logits, self.seen, self.config.repetition_penalty)
        if self.blockers is not None:
            logits = forbid(logits, list(range(len(self.blockers))), [b.banned() for b in self.blockers])
        if n_generated < self.config.min_new_tokens and self.eos is not None:
            logits = logits.clone()
            logits[:, self.eos] = NEG_INF
        return logits

    def push(self, tokens: list[int]) -> None:
        if self.seen is not None:
            rows = torch.arange(len(tokens), device=self.seen.device)
            self.seen[rows, torch.tensor(tokens, device=self.seen.device)] = True
        if self.blockers is not None:
            for blocker, token in zip(self.blockers, tokens):
                blocker.push(token)

    def select(self, index: list[int]) -> None:
        if self.seen is not None:
            self.seen = self.seen[index]
        if self.blockers is not None:
            self.blockers = [self.blockers[i].copy() for i in index]


def row_generators(prompts: list[list[int]], seed: int | None, samples_per_prompt: int) -> list[torch.Generator]:
    """One generator per row. With a seed, the j-th sample of a prompt draws from a stream named by
    (seed, the prompt's ids, j): a prompt gives the same sample alone or in any batch, and different
    prompts draw independent noise. Without one, each row is seeded from torch's global generator."""
    generators = []
    for index, prompt in enumerate(prompts):
        if seed is None:
            row_seed = int(torch.randint(2**62, ()))
        else:
            key = f"{seed}:{index % samples_per_prompt}:{','.join(map(str, prompt))}".encode()
            row_seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
        generators.append(torch.Generator().manual_seed(row_seed))
    return generators


def sample(logits: Tensor, generators: list[torch.Generator]) -> Tensor:
    """Draw one token per row from softmax(logits): argmax of p / E with E ~ Exponential(1) per token
    (the exponential race), each row from its own generator."""
    probabilities = logits.softmax(-1)
    uniform = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in generators]).to(logits.device)
    race = -torch.log(uniform)  # Exponential(1); u = 0 gives +inf, so the token loses the race
    return (probabilities / race).argmax(-1)


def decode_steps(
    session,
    rows: list[Row],
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    eos: int | None,
    stops: StopStrings,
    vocab_size: int,
) -> Iterator[list[tuple[int, int]]]:
    """Run greedy decoding or sampling over `rows` (one per session row, reading `prompts`); yield
    each step's (row index, token) pairs, and leave the results in the rows."""
    active = list(range(len(rows)))  # session row i generates rows[active[i]]
    logits = session.start()
    penalties = Penalties(config, [r.history for r in rows], vocab_size, logits.device, eos)
    generators = row_generators(prompts, config.seed, config.num_return_sequences) if config.do_sample else []
    for n_generated in range(max(r.limit for r in rows)):
        scores = penalties.apply(logits.float(), n_generated)
        if config.do_sample:
            chosen = sample(warp(scores, config.temperature, config.top_k, config.top_p, config.min_p), generators)
        else:
            chosen = scores.argmax(-1)
        tokens = chosen.tolist()
        done = [finish(rows[active[i]], token, eos, stops) for i, token in enumerate(tokens)]
        yield [(active[i], token) for i, token in enumerate(tokens)]
        penalties.push(tokens)
        keep = [i for i, finished in enumerate(done) if not finished]
        if not keep:
            return
        if len(keep) < len(active):
            index = torch.tensor(keep, device=chosen.device)
            session.select(index)
            penalties.select(keep)
            generators = [generators[i] for i in keep] if generators else []
            active, chosen = [active[i] for i in keep], chosen[index]
        logits = session.step(chosen)


def finish(row: Row, token: int, eos: int | None, stops: StopStrings) -> bool:
    """Record `token` in `row`; return True when the row is done."""
    if token == eos:
        row.finish_reason = "eos"
        return True
    row.tokens.append(token)
    row.stop_at = stops.find(row.tokens)
    if row.stop_at is not None:
        row.finish_reason = "stop"
    elif len(row.tokens) >= row.limit:
        row.finish_reason = "length"
    return row.finish_reason is not None
