"""One model run token by token: the prompt once, then one token per row per step.

A session owns the static KV cache (or, with `use_cache=False`, the whole sequence it re-runs at
every step, for comparison). `select` keeps and reorders rows: beam search's survivors, and finished
rows dropped so that they cost nothing. Rows are independent: a row's scores never depend on which
other rows share its batch, because a stack's prompts are padded on the left (their positions count
real tokens only; padding is masked) and an encoder-decoder's sources on the right.
"""

from __future__ import annotations

import torch
from torch import Tensor

from triform.generate.compiled import compiled_method
from triform.objectives import PromptLayout
from triform.objectives.batch import pad


def start_session(
    model,
    layout: PromptLayout,
    prompts: list[list[int]],
    max_new_tokens: int,
    use_cache: bool = True,
    compiled: bool = False,
):
    """`prompts` are framed by `layout.frame`; the session can take `max_new_tokens` steps, each
    compiled with torch.compile where `compiled` (generate/compiled.py)."""
    session = EncoderDecoderSession if layout.arch == "encoder-decoder" else StackSession
    return session(model, layout, prompts, max_new_tokens, use_cache, compiled)


def _last(ids: Tensor) -> Tensor | None:
    """Only the last position's scores are needed: the output projection skips the others. None
    for a single position (a cached step), which needs no selection."""
    if ids.shape[1] == 1:
        return None
    last = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    last[:, -1] = True
    return last


def _scores(logits: Tensor) -> Tensor:
    """(B, V) from the model's (B, V) selected scores or its (B, 1, V) scores of a single step."""
    return logits[:, -1] if logits.dim() == 3 else logits


def _pad_value(layout: PromptLayout) -> int:
    return layout.specials.pad if layout.specials.pad is not None else 0


class Session:
    """What both kinds share: the model, and its cached step compiled where asked (None: eager)."""

    step_method = "forward"  # the model's method a cached step calls

    def __init__(self, model, compiled: bool, use_cache: bool):
        self.model = model
        self.compiled_step = compiled_method(model, self.step_method) if compiled and use_cache else None


class StackSession(Session):
    def __init__(
        self,
        model,
        layout: PromptLayout,
        prompts: list[list[int]],
        max_new_tokens: int,
        use_cache: bool,
        compiled: bool = False,
    ):
        super().__init__(model, compiled, use_cache)
        self.pattern = layout.pattern
        device = model.head.projection.weight.device
        ids, mask = pad(prompts, _pad_value(layout), side="left")  # (B, T), (B, T) or None
        self.ids, self.padding_mask = ids.to(device), None if mask is None else mask.to(device)
        batch, width = ids.shape
        # The prefix counts slots, left padding included (nn/masks.py): the whole framed prompt.
        self.prefix_lengths = torch.full((batch,), width, device=device) if self.pattern == "prefix" else None
        self.token_types = torch.zeros_like(self.ids) if layout.segments and model.config.token_types else None
        self.cache = model.new_cache(batch, capacity=width + max_new_tokens) if use_cache else None

    @property
    def rows(self) -> int:
        return self.ids.shape[0]

    def _run(self, ids: Tensor, token_types: Tensor | None) -> Tensor:
        # The prompt's pass runs once and eager; the cached steps, compiled where asked.
        cached_step = ids.shape[1] == 1 and self.cache is not None
        logits = (self.compiled_step if cached_step and self.compiled_step else self.model)(
            ids,
            self.pattern,
            padding_mask=self.padding_mask,
            prefix_lengths=self.prefix_lengths,
            token_types=token_types,
            cache=self.cache,
            logits_at=_last(ids),
        )
        return _scores(logits)  # (B, V)

    def start(self) -> Tensor:
        return self._run(self.ids, self.token_types)

    def step(self, tokens: Tensor) -> Tensor:
        """Append one token per row (B,) and return the next scores (B, V)."""
        new = tokens[:, None]
        new_types = None if self.token_types is None else torch.ones_like(new)
        if self.padding_mask is not None:
            self.padding_mask = torch.cat([self.padding_mask, torch.ones_like(new, dtype=torch.bool)], dim=1)
        if self.cache is not None:
            self.ids = new  # the cache holds everything before
            return self._run(new, new_types)
        self.ids = torch.cat([self.ids, new], dim=1)
        if self.token_types is not None:
            self.token_types = torch.cat([self.token_types, new_types], dim=1)
        return self._run(self.ids, self.token_types)

    def extend(self, tokens: Tensor) -> Tensor:
        """Append n tokens per row (B, n) through the cache in one forward pass; return the scores
        after each of them (B, n, V). A draft's proposals are verified this way (generate/speculative.py)."""
        if self.padding_mask is not None:
            self.padding_mask = torch.cat([self.padding_mask, torch.ones_like(tokens, dtype=torch.bool)], dim=1)
        new_types = None if self.token_types is None else torch.ones_like(tokens)
        return self.model(
            tokens,
            self.pattern,
            padding_mask=self.padding_mask,
            prefix_lengths=self.prefix_lengths,
            token_types=new_types,
            cache=self.cache,
        )

    def rollback(self, n: int) -> None:
        """Forget the last n tokens of every row (rejected proposals)."""
        if n:
            self.cache.rollback(n)
            if self.padding_mask is not None:
                self.padding_mask = self.padding_mask[:, :-n]

    def select(self, index: Tensor) -> None:
        self.ids = self.ids.index_select(0, index)
        if self.padding_mask is not None:
            self.padding_mask = self.padding_mask.index_select(0, index)
        if self.prefix_lengths is not None:
            self.prefix_lengths = self.prefix_lengths.index_select(0, index)
        if self.token_types is not None:
            self.token_types = self.token_types.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)


class EncoderDecoderSession(Session):
    step_method = "decode"

    def __init__(
        self,
        model,
        layout: PromptLayout,
        sources: list[list[int]],
        max_new_tokens: int,
        use_cache: bool,
        compiled: bool = False,
    ):
        super().__init__(model, compiled, use_cache)
        device = model.head.projection.weight.device
        source_ids, mask = pad(sources, _pad_value(layout))  # right padding: positions are unchanged
        self.source_padding_mask = None if mask is None else mask.to(device)
        # The source is encoded once; each step only runs the decoder.
        self.memory = model.encode(source_ids.to(device), self.source_padding_mask)  # (B, S, d_model)
        # [BOS], or the vocabulary's own decoder start token (T5 and Marian: padding; BART: [EOS]).
        self.ids = torch.full((len(sources), 1), layout.specials.decoder_start_id, device=device)
        self.cache = model.new_cache(len(sources), capacity=max_new_tokens + 1) if use_cache else None
        if self.cache is not None:
            model.cache_source(self.memory, self.cache)  # the source's keys and values, before the first step

    @property
    def rows(self) -> int:
        return self.ids.shape[0]

    def _run(self, ids: Tensor) -> Tensor:
        # The first step fills the cross-attention cache and runs eager; the others, compiled where asked.
        first = self.cache is None or self.cache.length == 0
        logits = (self.model.decode if first or self.compiled_step is None else self.compiled_step)(
            ids, self.memory, memory_padding_mask=self.source_padding_mask, cache=self.cache, logits_at=_last(ids)
        )
        return _scores(logits)  # (B, V)

    def start(self) -> Tensor:
        return self._run(self.ids)

    def step(self, tokens: Tensor) -> Tensor:
        new = tokens[:, None]
        self.ids = new if self.cache is not None else torch.cat([self.ids, new], dim=1)
        return self._run(self.ids)

    def extend(self, tokens: Tensor) -> Tensor:
        """As StackSession.extend: n tokens per row (B, n) in one pass, the scores after each (B, n, V)."""
        return self.model.decode(tokens, self.memory, memory_padding_mask=self.source_padding_mask, cache=self.cache)

    def rollback(self, n: int) -> None:
        if n:
            self.cache.rollback(n)

    def select(self, index: Tensor) -> None:
        self.ids = self.ids.index_select(0, index)
        self.memory = self.memory.index_select(0, index)
        if self.source_padding_mask is not None:
            self.source_padding_mask = self.source_padding_mask.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)
