"""Token ids in, token ids out: the one generation loop behind the Python API and the CLI.

Prompts are lists of token ids without special tokens; the layout adds the ones the model was
trained with. Every strategy (greedy, sampling, beam search) runs on the same session, with the
static KV cache, for a stack (causal or prefix pattern) and an encoder-decoder alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import torch

from triform.errors import TriformError
from triform.generate.beam import beam_search
from triform.generate.config import GenerationConfig
from triform.generate.precision import decoding_model
from triform.generate.search import Decode, Row, StopStrings, decode_steps
from triform.generate.session import start_session
from triform.kernels.int8 import quantized_scheme
from triform.models.modes import evaluation
from triform.objectives import PromptLayout, Recipe, default_recipe
from triform.precision import autocast, autocast_dtype
from triform.vocab import SpecialTokens


class PromptTooLong(TriformError):
    def __init__(self, index: int, n_tokens: int, max_len: int):
        self.index = index
        self.reason = (
            f"{n_tokens} tokens leave no room to generate within the model's max_len {max_len} "
            "(shorten it, or truncate)"
        )
        super().__init__(f"prompt {index}: {self.reason}")


def resolve_layout(
    arch: str,
    specials: SpecialTokens,
    objective: str | None = None,
    pattern: str | None = None,
    mode: str | None = None,
) -> PromptLayout:
    """The prompt layout of a model trained with `objective` under `pattern` (reading the mode token
    `mode` first); by default a stack is a causal language model and an encoder-decoder a seq2seq model."""
    recipe = Recipe(objective, pattern) if objective else replace(default_recipe(arch), pattern=pattern)
    recipe = replace(recipe, mode=mode)
    return recipe.prompt_layout(arch, specials)


def numerics(model, precision: str):
    """No autograd, at `precision`. With bf16 autocast that means no_grad rather than inference_mode:
    autocast keeps each weight's bf16 copy until its outermost context ends only outside inference
    mode; without that cache every step would cast every weight again."""
    device = next(model.parameters()).device
    if precision == "auto" and quantized_scheme(model) is not None:
        precision = "fp32"  # int8 products compute in fp32 anyway; bf16 casts around them only cost time
    stack = ExitStack()
    stack.enter_context(torch.no_grad() if autocast_dtype(precision, device) is not None else torch.inference_mode())
    stack.enter_context(autocast(precision, device))
    return stack


@contextmanager
def inference(model, precision: str = "fp32"):
    """Evaluation mode and `numerics` for the duration."""
    with evaluation(model), numerics(model, precision):
        yield


def step_by_step(model, precision: str, generator: Iterator) -> Iterator:
    """Run each step of `generator` inside `numerics`, so that the caller's code between steps runs
    with its own autograd and autocast state. Autocast drops its bf16 copies of the weights when its
    outermost context ends; its nesting count stays raised until the last step, so that they are
    cast once, not at every step (which made a streamed bf16 token several times slower)."""
    torch.autocast_increment_nesting()
    try:
        while True:
            with numerics(model, precision):
                item = next(generator, None)
            if item is None:
                return
            yield item
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()


def plan_rows(
    model, layout: PromptLayout, prompts: list[list[int]], config: GenerationConfig
) -> tuple[list[list[int]], list[Row]]:
    """Frame each prompt and give it a budget of new tokens within the model's max_len."""
    max_len = model.config.max_len
    framed, rows = [], []
    for index, prompt in enumerate(prompts):
        room = layout.room(prompt, max_len)
        if room < 1:
            raise PromptTooLong(index, len(prompt), max_len)
        ids = layout.frame(prompt)
        framed.append(ids)
        rows.append(Row(index, layout.history(ids), min(target_limit(layout, prompt, config), room)))
    return framed, rows


def target_limit(layout: PromptLayout, prompt: list[int], config: GenerationConfig) -> int:
    """max_new_tokens, or less for a target bounded by its source (config.max_length_factor)."""
    if config.max_length_factor is not None and not layout.writes_target:
        raise TriformError(
            "max_length_factor bounds a target by its source; this model continues text (leave it unset)"
        )
    return config.target_limit(len(prompt))


def repeat_for_samples(framed: list[list[int]], rows: list[Row], n: int) -> tuple[list[list[int]], list[Row]]:
    if n == 1:
        return framed, rows
    framed = [ids for ids in framed for _ in range(n)]
    rows = [Row(r.prompt_index, r.history, r.limit) for r in rows for _ in range(n)]
    return framed, rows


def decoding(
    model, layout: PromptLayout, prompts: list[list[int]], config: GenerationConfig, decode: Decode | None
) -> tuple[list[Row], Iterator[list[tuple[int, int]]]]:
    """The rows and the iterator of `steps`, to be run inside `numerics` by the caller."""
    if config.num_beams > 1:
        raise TriformError("streaming works with greedy decoding and sampling; beam search decides only at the end")
    framed, rows = repeat_for_samples(*plan_rows(model, layout, prompts, config), config.num_return_sequences)
    stops = StopStrings(config.stop, decode)

    def run():
        with evaluation(model):
            session = start_session(model, layout, framed, max(r.limit for r in rows), config.use_cache, config.compile)
            yield from decode_steps(
                session, rows, framed, config, eos=layout.specials.eos, stops=stops, vocab_size=model.config.vocab_size
            )

    return rows, run()


def steps(
    model, layout: PromptLayout, prompts: list[list[int]], config: GenerationConfig, *, decode: Decode | None = None
) -> tuple[list[Row], Iterator[list[tuple[int, int]]]]:
    """Greedy decoding or sampling, step by step: the rows (filled in as the iterator runs) and an
    iterator of each step's (row, token) pairs. Rows are prompt-major, num_return_sequences each."""
    model, precision = decoding_model(model, config.precision, len(prompts) * config.num_return_sequences)
    rows, iterator = decoding(model, layout, prompts, config, decode)
    return rows, step_by_step(model, precision, iterator)


def generate_ids(
    model,
    layout: PromptLayout,
    prompts: list[list[int]],
    config: GenerationConfig | None = None,
    *,
    decode: Decode | None = None,
) -> list[Row]:
    """Generate for every prompt; returns num_return_sequences rows per prompt, prompt-major."""
    config = config or GenerationConfig()
    if not prompts:
        return []
    if config.num_beams == 1:
        model, precision = decoding_model(model, config.precision, len(prompts) * config.num_return_sequences)
        rows, iterator = decoding(model, layout, prompts, config, decode)
        # One context around all steps, not one per step (step_by_step): autocast's weight casts are
        # kept, and entering the contexts cost a small model's step a tenth of its time.
        with numerics(model, precision):
            for _ in iterator:
                pass
        return rows
    return [row for per_prompt in beam_ids(model, layout, prompts, config, decode=decode) for row in per_prompt]


def beam_ids(
    model, layout: PromptLayout, prompts: list[list[int]], config: GenerationConfig, *, decode: Decode | None = None
) -> list[list[Row]]:
    """Beam search for every prompt (whatever config.num_beams, one included): the n best of each."""
    framed, rows = plan_rows(model, layout, prompts, config)
    stops = StopStrings(config.stop, decode)
    model, precision = decoding_model(model, config.precision, len(rows) * config.num_beams)
    with inference(model, precision):
        session = start_session(model, layout, framed, max(r.limit for r in rows), config.use_cache, config.compile)
        return beam_search(
            session, rows, config, eos=layout.specials.eos, stops=stops, vocab_size=model.config.vocab_size
        )


def generate_in_batches(
    model,
    layout: PromptLayout,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    batch_size: int,
    decode: Decode | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """`generate_ids` over many prompts, `batch_size` at a time, longest first so that prompts of a
    batch have similar lengths (as fairseq does); the rows come back in prompt order, and each
    prompt's `prompt_index` is its place in `prompts`. `progress(n_prompts_done, n_tokens)` is
    called after each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    by_prompt: list[list[Row]] = [[] for _ in prompts]
    n_done = n_tokens = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for row in generate_ids(model, layout, [prompts[i] for i in chunk], config, decode=decode):
            row.prompt_index = chunk[row.prompt_index]
            by_prompt[row.prompt_index].append(row)
            n_tokens += len(row.tokens)
        n_done += len(chunk)
        if progress is not None:
            progress(n_done, n_tokens)
    return [row for rows in by_prompt for row in rows]


def greedy(
    model,
    prompts: list[list[int]],
    specials: SpecialTokens,
    *,
    max_new_tokens: int = 64,
    objective: str | None = None,
    pattern: str | None = None,
    mode: str | None = None,
) -> list[list[int]]:
    """Greedy decoding, batched, with the KV cache: the generated ids of each prompt ([EOS] and
    special tokens of the layout excluded). `prompts` are token ids without special tokens; the
    layout follows `objective` and `pattern` as in training (a stack defaults to clm, an
    encoder-decoder to seq2seq)."""
    layout = resolve_layout(model.config.arch, specials, objective, pattern, mode)
    rows = generate_ids(model, layout, prompts, GenerationConfig(max_new_tokens=max_new_tokens))
    return [row.tokens for row in rows]
