"""Text in, text out: a model, its tokenizer and the layout it was trained with.

generator = TextGenerator.load("runs/gpt")
generator.generate("Once upon a time", max_new_tokens=40, do_sample=True, top_p=0.9, seed=0).text
for piece in generator.stream("Once upon a time"):
    print(piece, end="", flush=True)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

from triform.checkpoint import load_model
from triform.errors import TriformError
from triform.generate.config import GenerationConfig
from triform.generate.engine import PromptTooLong, generate_in_batches, steps
from triform.generate.fill_mask import Candidate, check_fills_masks, fill_mask
from triform.generate.mask_predict import mask_predict
from triform.generate.pieces import Pieces, row_text
from triform.generate.search import Row, StopStrings
from triform.objectives import PromptLayout, Recipe, default_recipe, read_recipe
from triform.vocab import MASK, SpecialTokens, unpadded


@dataclass
class Generation:
    text: str
    ids: list[int]  # the generated token ids, without the prompt and the final [EOS]
    finish_reason: str  # "eos", "stop" (a stop string; the text ends before it) or "length"
    prompt_index: int = 0
    score: float | None = None  # beam search: log-probability / length penalty


class TextGenerator:
    """Generation, streaming, fill-mask and mask-predict for one model. Its recipe (the objective and
    pattern it was trained with) decides how prompts are laid out and what the model can do."""

    def __init__(
        self,
        model,
        tokenizer,
        specials: SpecialTokens | None = None,
        *,
        objective: str | None = None,
        pattern: str | None = None,
        recipe: Recipe | None = None,
    ):
        """`recipe`, or the `objective` and `pattern` of one: by default a stack continues text (clm)
        and an encoder-decoder writes a target (seq2seq)."""
        if specials is None:
            specials = SpecialTokens.from_tokenizer(tokenizer)
        self.model, self.tokenizer, self.specials = model, unpadded(tokenizer), specials
        arch = model.config.arch
        if recipe is None:
            recipe = Recipe(objective, pattern) if objective else replace(default_recipe(arch), pattern=pattern)
        self.recipe = recipe
        reads_prompts = recipe.writes(arch) and not recipe.fills_masks(arch)
        self.layout_of_prompts = recipe.prompt_layout(arch, specials) if reads_prompts else None
        self._objective = None

    @property
    def objective(self):
        """The objective of the recipe, built when first needed (fill-mask lays its text out)."""
        if self._objective is None:
            config = self.model.config
            self._objective = self.recipe.build(config.arch, self.specials, config.vocab_size)
        return self._objective

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        device: str = "cpu",
        objective: str | None = None,
        pattern: str | None = None,
    ) -> TextGenerator:
        """A model folder; its recipe says how it was trained, unless `objective` (and `pattern`) say otherwise."""
        loaded = load_model(directory, device=device)
        if loaded.tokenizer is None:
            raise TriformError(f"{directory}: no tokenizer.json; text generation needs the model's tokenizer")
        specials = loaded.specials or SpecialTokens.from_tokenizer(
            loaded.tokenizer, source=f"{directory}/tokenizer.json"
        )
        recipe = read_recipe(loaded.extra, loaded.config.arch, f"{directory}/config.json")
        if objective is not None:
            recipe = Recipe(objective, pattern)
        elif pattern is not None:
            recipe = replace(recipe, pattern=pattern)
        return cls(loaded.model, loaded.tokenizer, specials, recipe=recipe)

    @property
    def layout(self) -> PromptLayout:
        """How prompts are laid out (an error, naming what to do instead, for a model that fills masks
        or writes no text)."""
        if self.layout_of_prompts is None:
            return self.recipe.prompt_layout(self.model.config.arch, self.specials)  # raises, saying why
        return self.layout_of_prompts

    @property
    def fills_masks(self) -> bool:
        """Whether the model fills [MASK]s (fill-mask, mask-predict) rather than continuing text."""
        return self.recipe.fills_masks(self.model.config.arch)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def config(self, config: GenerationConfig | None, options: dict) -> GenerationConfig:
        config = config or GenerationConfig()
        return config.replace(**options) if options else config

    def tokenize(self, texts: list[str], *, truncate: bool = False) -> tuple[list[list[int]], list[int]]:
        """Token ids of each prompt, and the indices of those shortened to fit the model (only with
        `truncate`; otherwise a prompt that leaves no room to generate is an error naming it)."""
        layout, max_len = self.layout, self.model.config.max_len
        prompts, truncated = [], []
        for index, text in enumerate(texts):
            ids = self.encode(text)
            if layout.room(ids, max_len) < 1:
                if not truncate:
                    raise PromptTooLong(index, len(ids), max_len)
                ids = layout.fit(ids, max_len)
                truncated.append(index)
            prompts.append(ids)
        return prompts, truncated

    def generate(
        self,
        prompts: str | list[str],
        config: GenerationConfig | None = None,
        *,
        batch_size: int = 32,
        truncate: bool = False,
        **options,
    ) -> Generation | list[Generation]:
        """Generate for one prompt (-> a Generation) or a list (-> a list, num_return_sequences per
        prompt, in prompt order), `batch_size` prompts at a time. Options are GenerationConfig fields."""
        config = self.config(config, options)
        single = isinstance(prompts, str)
        ids, _ = self.tokenize([prompts] if single else list(prompts), truncate=truncate)
        results = self.generate_from_ids(ids, config, batch_size=batch_size)
        return results[0] if single and config.num_return_sequences == 1 else results

    def generate_from_ids(
        self, prompts: list[list[int]], config: GenerationConfig, *, batch_size: int = 32, progress=None
    ) -> list[Generation]:
        rows = generate_in_batches(
            self.model, self.layout, prompts, config, batch_size=batch_size, decode=self.decode, progress=progress
        )
        return [self.result(row) for row in rows]

    def result(self, row: Row) -> Generation:
        return Generation(row_text(row, self.decode), row.tokens, row.finish_reason, row.prompt_index, row.score)

    def stream(
        self, prompt: str, config: GenerationConfig | None = None, *, truncate: bool = False, **options
    ) -> Iterator[str]:
        """The text of one generation in pieces as it is produced (greedy or sampling). The pieces
        join into `generate(prompt).text`: text that may be the start of a stop string, or an
        incomplete character, is held back until it is settled."""
        (ids,), _ = self.tokenize([prompt], truncate=truncate)
        return self.stream_ids(ids, self.config(config, options))

    def stream_ids(self, prompt: list[int], config: GenerationConfig) -> Iterator[str]:
        if config.num_return_sequences != 1:
            raise TriformError("stream: one sequence at a time (num_return_sequences = 1)")
        rows, iterator = steps(self.model, self.layout, [prompt], config, decode=self.decode)
        return self._pieces(rows[0], iterator, StopStrings(config.stop, self.decode))

    def _pieces(self, row: Row, iterator, stops: StopStrings) -> Iterator[str]:
        pieces = Pieces(self.decode, stops)
        for _ in iterator:
            piece = pieces.next(row)
            if piece:
                yield piece

    def fill_mask(self, texts: str | list[str], top_k: int = 5) -> list[list[Candidate]] | list[list[list[Candidate]]]:
        """For each [MASK] of a text, its top_k candidates with probabilities; a list of those per text."""
        check_fills_masks(self.fills_masks, self.model.config.arch, self.recipe.objective)
        single = isinstance(texts, str)
        sequences = [self.with_masks(t) for t in ([texts] if single else texts)]
        results = fill_mask(self.model, self.objective, sequences, top_k=top_k)
        named = [
            [[Candidate(c.id, c.probability, self.tokenizer.id_to_token(c.id)) for c in mask] for mask in r]
            for r in results
        ]
        return named[0] if single else named

    def mask_predict(self, prompt: str = "", *, length: int | None = None, iterations: int = 10) -> str:
        """Generate `length` tokens after `prompt` with mask-predict; with no length, fill the
        [MASK]s of the prompt jointly. Returns the whole text, prompt included."""
        check_fills_masks(self.fills_masks, self.model.config.arch, self.recipe.objective)
        sequence = self.with_masks(prompt) + [self.specials.mask] * (length or 0)
        if self.specials.mask not in sequence:
            raise TriformError("mask-predict: give a length, or a prompt with [MASK] in it")
        return self.decode(mask_predict(self.model, self.objective, sequence, iterations=iterations))

    def with_masks(self, text: str) -> list[int]:
        """Token ids of a text in which each literal [MASK] is the mask token, whatever the tokenizer
        does with that string (added tokens are split out the same way)."""
        pieces = text.split(MASK)
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            ids += self.encode(piece.rstrip() if index < len(pieces) - 1 else piece)
            if index < len(pieces) - 1:
                ids.append(self.specials.mask)
        return ids
