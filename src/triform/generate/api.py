"""Text in, text out: a model, its tokenizer and the layout it was trained with.

generator = TextGenerator.load("runs/gpt")
generator.generate("Once upon a time", max_new_tokens=40, do_sample=True, top_p=0.9, seed=0).text
TextGenerator.load("runs/gpt", quantize="int8")  # int8 weights: faster decoding on a CPU
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
from triform.generate.speculative import speculative_ids
from triform.kernels.int8 import check_scheme
from triform.kernels.int8 import quantize as quantize_model
from triform.models.adapters import load_adapted
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
    pattern it was trained with) decides how prompts are laid out and what the model can do. A model
    trained with a mixture is used per call as one of its parts (`use=`: a part's label, objective or
    mode; by default the part best at what is asked), with that part's pattern and mode token."""

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
        self.layouts: dict[str | None, PromptLayout] = {}
        if recipe.writes(arch) and not recipe.fills_masks(arch):  # a model that cannot generate fails now
            self.layouts[None] = recipe.prompt_layout(arch, specials)
        self.objectives: dict[str | None, object] = {}
        self.draft, self.draft_k, self.acceptance = None, 4, None  # speculative decoding (with_draft)

    @property
    def objective(self):
        """The objective of the recipe, built when first needed (fill-mask lays its text out)."""
        return self.objective_for(None)

    def objective_for(self, use: str | None):
        """The objective that lays out masked text for `use` (a mixture's part; None: the default)."""
        if use not in self.objectives:
            config = self.model.config
            part = self.recipe.part(config.arch, use=use, need="fill")
            self.objectives[use] = part.build(config.arch, self.specials, config.vocab_size)
        return self.objectives[use]

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        device: str = "cpu",
        objective: str | None = None,
        pattern: str | None = None,
        adapter: str | os.PathLike | None = None,
        quantize: str | None = None,
        draft: str | os.PathLike | None = None,
        draft_k: int = 4,
    ) -> TextGenerator:
        """A model folder (with the LoRA adapters of the folder `adapter` on it); its recipe (or the
        adapters') says how it was trained, unless `objective` (and `pattern`) say otherwise.
        `quantize="int8"` stores the weights of every linear layer in int8 (CPU inference,
        kernels/int8.py). `draft`, a smaller model folder with the same tokenizer, proposes `draft_k`
        tokens at a time for the model to verify (speculative decoding, `with_draft`)."""
        if quantize is not None:
            check_scheme(quantize)
        if adapter is not None:
            loaded = load_adapted(directory, adapter, device=device)
        else:
            loaded = load_model(directory, device=device)
        if quantize is not None:
            quantize_model(loaded.model, quantize)
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
        generator = cls(loaded.model, loaded.tokenizer, specials, recipe=recipe)
        if draft is not None:
            generator.with_draft(cls.load(draft, device=device, quantize=quantize), draft_k)
        return generator

    def with_draft(self, draft: TextGenerator, k: int = 4) -> TextGenerator:
        """Decode greedily or by sampling with `draft` proposing k tokens a round, which the model checks
        in one forward pass (Leviathan et al. 2023; generate/speculative.py): the same greedy outputs,
        the same distribution of samples. `self.acceptance` says how many proposals were kept."""
        if draft.tokenizer.get_vocab() != self.tokenizer.get_vocab() or draft.specials != self.specials:
            raise TriformError("draft: its tokenizer differs from the model's; a draft needs the same tokenizer")
        self.draft, self.draft_k = draft.model, k
        return self

    @property
    def layout(self) -> PromptLayout:
        """How prompts are laid out (an error, naming what to do instead, for a model that fills masks)."""
        return self.layout_for(None)

    def layout_for(self, use: str | None) -> PromptLayout:
        """How prompts are laid out for `use` (a mixture's part; None: the part best at generating)."""
        if use not in self.layouts:
            self.layouts[use] = self.recipe.prompt_layout(self.model.config.arch, self.specials, use)  # may raise
        return self.layouts[use]

    @property
    def generates(self) -> bool:
        """Whether the model continues text or writes a target (a mixture may also fill masks)."""
        try:
            self.layout_for(None)
        except TriformError:
            return False
        return True

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

    def tokenize(
        self, texts: list[str], *, truncate: bool = False, use: str | None = None
    ) -> tuple[list[list[int]], list[int]]:
        """Token ids of each prompt, and the indices of those shortened to fit the model (only with
        `truncate`; otherwise a prompt that leaves no room to generate is an error naming it)."""
        layout, max_len = self.layout_for(use), self.model.config.max_len
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
        use: str | None = None,
        **options,
    ) -> Generation | list[Generation]:
        """Generate for one prompt (-> a Generation) or a list (-> a list, num_return_sequences per
        prompt, in prompt order), `batch_size` prompts at a time. Options are GenerationConfig fields;
        `use` names the part of a mixture to generate as."""
        config = self.config(config, options)
        single = isinstance(prompts, str)
        ids, _ = self.tokenize([prompts] if single else list(prompts), truncate=truncate, use=use)
        results = self.generate_from_ids(ids, config, batch_size=batch_size, use=use)
        return results[0] if single and config.num_return_sequences == 1 else results

    def generate_from_ids(
        self,
        prompts: list[list[int]],
        config: GenerationConfig,
        *,
        batch_size: int = 32,
        progress=None,
        use: str | None = None,
    ) -> list[Generation]:
        layout = self.layout_for(use)
        if self.draft is not None:
            rows, self.acceptance = speculative_ids(
                self.model, self.draft, layout, prompts, config, k=self.draft_k, decode=self.decode
            )
            if progress is not None:
                progress(len(prompts), sum(len(row.tokens) for row in rows))
            return [self.result(row) for row in rows]
        rows = generate_in_batches(
            self.model, layout, prompts, config, batch_size=batch_size, decode=self.decode, progress=progress
        )
        return [self.result(row) for row in rows]

    def result(self, row: Row) -> Generation:
        return Generation(row_text(row, self.decode), row.tokens, row.finish_reason, row.prompt_index, row.score)

    def stream(
        self,
        prompt: str,
        config: GenerationConfig | None = None,
        *,
        truncate: bool = False,
        use: str | None = None,
        **options,
    ) -> Iterator[str]:
        """The text of one generation in pieces as it is produced (greedy or sampling). The pieces
        join into `generate(prompt).text`: text that may be the start of a stop string, or an
        incomplete character, is held back until it is settled."""
        (ids,), _ = self.tokenize([prompt], truncate=truncate, use=use)
        return self.stream_ids(ids, self.config(config, options), use=use)

    def stream_ids(self, prompt: list[int], config: GenerationConfig, use: str | None = None) -> Iterator[str]:
        if config.num_return_sequences != 1:
            raise TriformError("stream: one sequence at a time (num_return_sequences = 1)")
        rows, iterator = steps(self.model, self.layout_for(use), [prompt], config, decode=self.decode)
        return self._pieces(rows[0], iterator, StopStrings(config.stop, self.decode))

    def _pieces(self, row: Row, iterator, stops: StopStrings) -> Iterator[str]:
        pieces = Pieces(self.decode, stops)
        for _ in iterator:
            piece = pieces.next(row)
            if piece:
                yield piece

    def fill_mask(
        self, texts: str | list[str], top_k: int = 5, *, use: str | None = None
    ) -> list[list[Candidate]] | list[list[list[Candidate]]]:
        """For each [MASK] of a text, its top_k candidates with probabilities; a list of those per text.
        A mixture fills them as its part `use` (by default its masked LM, bidirectional where it has one)."""
        check_fills_masks(self.fills_masks, self.model.config.arch, self.recipe.objective)
        single = isinstance(texts, str)
        sequences = [self.with_masks(t) for t in ([texts] if single else texts)]
        results = fill_mask(self.model, self.objective_for(use), sequences, top_k=top_k)
        named = [
            [[Candidate(c.id, c.probability, self.tokenizer.id_to_token(c.id)) for c in mask] for mask in r]
            for r in results
        ]
        return named[0] if single else named

    def mask_predict(
        self, prompt: str = "", *, length: int | None = None, iterations: int = 10, use: str | None = None
    ) -> str:
        """Generate `length` tokens after `prompt` with mask-predict; with no length, fill the
        [MASK]s of the prompt jointly. Returns the whole text, prompt included."""
        check_fills_masks(self.fills_masks, self.model.config.arch, self.recipe.objective)
        sequence = self.with_masks(prompt) + [self.specials.mask] * (length or 0)
        if self.specials.mask not in sequence:
            raise TriformError("mask-predict: give a length, or a prompt with [MASK] in it")
        return self.decode(mask_predict(self.model, self.objective_for(use), sequence, iterations=iterations))

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
