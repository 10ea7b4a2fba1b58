"""Beam search with the length penalty of Wu et al. 2016, early stopping and n-best output.

Each prompt keeps `num_beams` running sequences in the session, one cache row each; at every step
the 2 · num_beams best extensions are scored, so that enough of them remain once those ending in
[EOS] (or a stop string) are set aside as finished hypotheses. Penalties act on the logits before
the log-softmax, exactly as in greedy decoding, so that one beam is greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triform.generate.config import GenerationConfig
from triform.generate.search import Penalties, Row, StopStrings

NEG_INF = float("-inf")


def length_penalty(length: int, alpha: float) -> float:
    """lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha (Wu et al. 2016, §7); a hypothesis scores
    log P(Y) / lp(Y). |Y| counts the generated tokens, the final [EOS] included."""
    return ((5 + length) / 6) ** alpha


@dataclass
class Extension:
    row: int  # session row of the beam being extended
    token: int
    score: float  # summed log-probability


class Hypotheses:
    """The best finished sequences of one prompt, at most num_beams of them."""

    def __init__(self, prompt: Row, config: GenerationConfig):
        self.prompt, self.config = prompt, config
        self.finished: list[Row] = []

    def add(self, tokens: list[int], log_probability: float, reason: str, stop_at: int | None, length: int) -> None:
        score = log_probability / length_penalty(length, self.config.length_penalty)
        row = Row(self.prompt.prompt_index, self.prompt.history, self.prompt.limit, tokens, reason, stop_at, score)
        self.finished.append(row)
        self.finished.sort(key=lambda r: r.score, reverse=True)
        del self.finished[self.config.num_beams :]

    def done(self, best_running: float, n_generated: int) -> bool:
        """Whether no running beam can still enter the list (Wu et al.'s stopping rule, made exact)."""
        if len(self.finished) < self.config.num_beams:
            return False
        if self.config.early_stopping:
            return True
        # log P only falls as a beam grows; lp grows with length when alpha > 0, so the best a beam
        # can reach is its score now divided by lp at the longest length it may still reach.
        alpha = self.config.length_penalty
        longest = self.prompt.limit if alpha > 0 else n_generated
        return self.finished[-1].score >= best_running / length_penalty(longest, alpha)


def beam_search(
    session, prompts: list[Row], config: GenerationConfig, *, eos: int | None, stops: StopStrings, vocab_size: int
) -> list[list[Row]]:
    """The `num_return_sequences` best hypotheses of each prompt (one session row per prompt at the
    start), best first, each with its score."""
    n_beams = config.num_beams
    logits = session.start()
    expand = torch.arange(len(prompts), device=logits.device).repeat_interleave(n_beams)
    session.select(expand)
    logits = logits[expand]
    penalties = Penalties(config, [p.history for p in prompts for _ in range(n_beams)], vocab_size, logits.device, eos)
    hypotheses = [Hypotheses(p, config) for p in prompts]
    active = list(range(len(prompts)))
    beam_tokens: list[list[int]] = [[] for _ in range(len(active) * n_beams)]
    # Every beam starts as the same empty sequence: only the first may extend at the first step.
    beam_scores = torch.tensor([0.0] + [NEG_INF] * (n_beams - 1), device=logits.device).repeat(len(active))
    for n_generated in range(max(p.limit for p in prompts)):
        log_probabilities = penalties.apply(logits.float(), n_generated).log_softmax(-1) + beam_scores[:, None]
        top = log_probabilities.view(len(active), -1).topk(2 * n_beams, dim=-1)  # (A, 2K) over K · V
        values, indices = top.values.tolist(), top.indices.tolist()
        survivors: list[Extension] = []
        still_active = []
        for a, prompt_index in enumerate(active):
            candidates = [
                Extension(a * n_beams + flat // vocab_size, flat % vocab_size, value)
                for value, flat in zip(values[a], indices[a])
            ]
            extensions = extend(hypotheses[prompt_index], candidates, beam_tokens, n_generated, eos, stops)
            if extensions is not None:
                survivors += extensions
                still_active.append(prompt_index)
        if not still_active:
            break
        index = [e.row for e in survivors]
        session.select(torch.tensor(index, device=logits.device))
        penalties.select(index)
        penalties.push([e.token for e in survivors])
        beam_tokens = [beam_tokens[e.row] + [e.token] for e in survivors]
        beam_scores = torch.tensor([e.score for e in survivors], device=logits.device)
        active = still_active
        logits = session.step(torch.tensor([e.token for e in survivors], device=logits.device))
    return [h.finished[: config.num_return_sequences] for h in hypotheses]


def extend(
    hypotheses: Hypotheses,
    candidates: list[Extension],
    beam_tokens: list[list[int]],
    n_generated: int,
    eos: int | None,
    stops: StopStrings,
) -> list[Extension] | None:
    """Sort one prompt's best candidates into finished hypotheses and the next beams; return the
    next beams, or None when the prompt is done."""
    n_beams = hypotheses.config.num_beams
    beams: list[Extension] = []
    for rank, candidate in enumerate(candidates):
        if candidate.score == NEG_INF:
            break
        tokens = beam_tokens[candidate.row]
        # Only a candidate among the best num_beams may finish (as in fairseq and transformers).
        if candidate.token == eos:
            if rank < n_beams:
                hypotheses.add(tokens, candidate.score, "eos", None, len(tokens) + 1)
            continue
        extended = tokens + [candidate.token]
        stop_at = stops.find(extended)
        if stop_at is not None:
            if rank < n_beams:
                hypotheses.add(extended, candidate.score, "stop", stop_at, len(extended))
            continue
        beams.append(candidate)
        if len(beams) == n_beams:
            break
    if n_generated + 1 >= hypotheses.prompt.limit:  # out of room: the running beams finish as they are
        for beam in beams:
            extended = beam_tokens[beam.row] + [beam.token]
            hypotheses.add(extended, beam.score, "length", None, len(extended))
        return None
    if not beams or hypotheses.done(beams[0].score, n_generated + 1):
        return None
    while len(beams) < n_beams:  # too few live candidates: fill with beams that can never win
        beams.append(Extension(beams[0].row, beams[0].token, NEG_INF))
    return beams
