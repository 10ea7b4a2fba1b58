"""Speculative decoding (Leviathan et al. 2023): a small draft model proposes k tokens, the model scores
all of them in one forward pass, and keeps the longest run it agrees with, plus one token of its own.

Greedy decoding keeps a proposal when it is the model's most likely token, and the outputs are the
model's own greedy outputs. Sampling keeps proposal x with probability min(1, p(x) / q(x)) and, at the
first rejection, draws from norm(max(0, p - q)) (§2.3, Algorithm 1): every token is then distributed
exactly as if the model had sampled it alone. p and q are the model's and the draft's distributions
after the same temperature, top-k, top-p and min-p. Rejected tokens leave both KV caches by rolling
their length back. A row's tokens come from one verification pass per round, so a round of k
proposals costs k draft steps and one model pass over k + 1 tokens.

Rows run one at a time (batch 1), where a step is bound by reading the weights and the model's pass
over k + 1 tokens costs about what one token does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from triform.errors import TriformError
from triform.generate.config import GenerationConfig
from triform.generate.logits import NEG_INF, warp
from triform.generate.precision import decoding_precision, run_as
from triform.generate.search import Row, StopStrings, finish, row_generators
from triform.generate.session import start_session
from triform.objectives import PromptLayout


@dataclass
class Acceptance:
    """How many proposals the model kept: the acceptance rate, and tokens per model pass."""

    proposed: int = 0
    accepted: int = 0
    rounds: int = 0  # verification passes of the model
    tokens: int = 0

    def record(self, proposed: int, accepted: int) -> None:
        self.proposed, self.accepted, self.rounds = self.proposed + proposed, self.accepted + accepted, self.rounds + 1

    @property
    def rate(self) -> float:
        return self.accepted / max(self.proposed, 1)

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens / max(self.rounds, 1)


def check_draft(model, draft, config: GenerationConfig, k: int) -> None:
    """A draft decodes with the model's vocabulary and architecture, greedily or by sampling."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise TriformError(f"draft_k: expected an integer >= 1, got {k!r}")
    if draft.config.vocab_size != model.config.vocab_size or draft.config.arch != model.config.arch:
        raise TriformError(
            f"draft: a {draft.config.arch} with vocabulary {draft.config.vocab_size}; the model is a "
            f"{model.config.arch} with vocabulary {model.config.vocab_size} (the draft needs the same tokenizer)"
        )
    if config.num_beams > 1:
        raise TriformError("draft: speculative decoding works with greedy decoding and sampling, not beam search")
    if config.repetition_penalty != 1.0 or config.no_repeat_ngram_size:
        raise TriformError("draft: repetition_penalty and no_repeat_ngram_size are not supported with a draft")
    if not config.use_cache:
        raise TriformError("draft: speculative decoding needs the KV cache (use_cache true)")


def distribution(logits: Tensor, config: GenerationConfig, n_generated: int, eos: int | None) -> Tensor:
    """(n, V) probabilities of the next token at n consecutive positions, the first after n_generated
    tokens: [EOS] forbidden before min_new_tokens, then sampling's filters. Greedy: the scores."""
    logits = logits.float().clone()
    if eos is not None and n_generated < config.min_new_tokens:
        early = torch.arange(n_generated, n_generated + logits.shape[0], device=logits.device) < config.min_new_tokens
        logits[early, eos] = NEG_INF
    if not config.do_sample:
        return logits
    return warp(logits, config.temperature, config.top_k, config.top_p, config.min_p).softmax(-1)


def verify(
    p: Tensor, q: Tensor, proposals: list[int], sampling: bool, generator: torch.Generator | None
) -> tuple[int, int]:
    """(proposals kept, the model's next token) for proposals x_1..x_k drawn from q (k, V), given the
    model's p (k + 1, V): p[j] is its distribution for x_(j+1), p[k] the one after all of them."""
    for j, token in enumerate(proposals):
        if not sampling:
            best = int(p[j].argmax())
            if best != token:
                return j, best
            continue
        ratio = float(p[j, token]) / float(q[j, token])
        if float(torch.rand((), generator=generator)) < ratio:
            continue
        residual = (p[j] - q[j]).clamp_min(0)  # norm(max(0, p - q)), Leviathan et al. §2.3
        if float(residual.sum()) <= 0:
            residual = p[j]
        return j, int(torch.multinomial(residual, 1, generator=generator))
    last = p[len(proposals)]
    return len(proposals), int(last.argmax()) if not sampling else int(torch.multinomial(last, 1, generator=generator))


def choose(probabilities: Tensor, sampling: bool, generator: torch.Generator | None) -> int:
    if not sampling:
        return int(probabilities.argmax())
    return int(torch.multinomial(probabilities, 1, generator=generator))


def speculative_ids(
    model, draft, layout: PromptLayout, prompts: list[list[int]], config: GenerationConfig, *, k: int = 4, decode=None
) -> tuple[list[Row], Acceptance]:
    """Greedy decoding or sampling of every prompt with `draft` proposing `k` tokens a round; the rows
    (num_return_sequences per prompt, prompt-major) and how many proposals were kept."""
    from triform.generate.engine import numerics, plan_rows, repeat_for_samples
    from triform.models.modes import evaluation

    check_draft(model, draft, config, k)
    n = config.num_return_sequences
    framed, rows = repeat_for_samples(*plan_rows(model, layout, prompts, config), n)
    _, draft_rows = repeat_for_samples(*plan_rows(draft, layout, prompts, config), n)
    for row, draft_row in zip(rows, draft_rows):
        row.limit = min(row.limit, draft_row.limit)  # the draft's max_len bounds its proposals
    generators = row_generators(framed, config.seed, n) if config.do_sample else [None] * len(rows)
    stats = Acceptance()
    stops = StopStrings(config.stop, decode)
    # One precision for both, decided for the model's verification pass of k + 1 tokens; on a CPU,
    # bf16 runs both models' bf16 twins (generate/precision.py), not autocast.
    precision = decoding_precision(model, config.precision, k + 1)
    (model, precision), (draft, _) = run_as(model, precision), run_as(draft, precision)
    with evaluation(model), evaluation(draft), numerics(model, precision):
        for ids, row, generator in zip(framed, rows, generators):
            Speculation(model, draft, layout, config, k, stops).run(ids, row, generator, stats)
    return rows, stats


class Speculation:
    """One row decoded with a draft: the model's and the draft's sessions, one round at a time."""

    def __init__(self, model, draft, layout: PromptLayout, config: GenerationConfig, k: int, stops: StopStrings):
        self.model, self.draft, self.layout, self.config, self.k, self.stops = model, draft, layout, config, k, stops
        self.eos = layout.specials.eos

    def tokens(self, ids: list[int], like: Tensor) -> Tensor:
        return torch.tensor([ids], device=like.device)  # (1, n)

    def run(self, framed: list[int], row: Row, generator, stats: Acceptance) -> None:
        config, sampling, eos = self.config, self.config.do_sample, self.eos
        target = start_session(self.model, self.layout, [framed], row.limit + self.k + 1)
        # The draft's one-token steps are compiled where asked; the passes over several tokens stay eager.
        drafter = start_session(self.draft, self.layout, [framed], row.limit + self.k + 2, compiled=config.compile)
        first = target.start()  # (1, V)
        drafter.start()
        token = choose(distribution(first, config, 0, eos)[0], sampling, generator)
        if finish(row, token, eos, self.stops):
            return
        pending, unread = token, [token]  # the token the model has not read; those the draft has not
        while True:
            n = len(row.tokens)
            width = min(self.k, row.limit - n)
            proposals, q = self.propose(drafter, unread, n, width, generator, first)
            scores = target.extend(self.tokens([pending, *proposals], first))[0]  # (width + 1, V)
            kept, token = verify(distribution(scores, config, n, eos), q, proposals, sampling, generator)
            target.rollback(width - kept)
            if kept == width:
                unread = [proposals[-1], token]  # the draft never read its last proposal
            else:
                drafter.rollback(width - 1 - kept)
                unread = [token]
            stats.record(width, kept)
            for new in [*proposals[:kept], token]:
                stats.tokens += 1
                if finish(row, new, eos, self.stops):
                    return
            pending = token

    def propose(
        self, drafter, unread: list[int], n: int, width: int, generator, like: Tensor
    ) -> tuple[list[int], Tensor | None]:
        """`width` tokens from the draft, after it reads `unread`; with sampling, their distributions (width, V)."""
        logits = drafter.extend(self.tokens(unread, like))[0, -1:]  # (1, V)
        proposals, distributions = [], []
        for j in range(width):
            q = distribution(logits, self.config, n + j, self.eos)[0]
            proposals.append(choose(q, self.config.do_sample, generator))
            distributions.append(q)
            if j < width - 1:
                logits = drafter.step(self.tokens(proposals[-1:], like)[0])  # (1, V)
        return proposals, torch.stack(distributions) if self.config.do_sample else None
