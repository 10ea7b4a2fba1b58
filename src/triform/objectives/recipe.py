"""A model's recipe: the objective it was trained with, its attention pattern and options.

The recipe travels in the model folder (config.json "extra" -> "recipe") and is read by one function,
`read_recipe`, so that generation, fine-tuning and evaluation all ask the objective it names what the
model can do (continue text, fill masks, write a target) and how to frame its inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from triform.errors import TriformError
from triform.objectives.base import PACKS, Objective
from triform.objectives.compat import check_pair
from triform.objectives.layout import PromptLayout
from triform.objectives.mixture import Drawn
from triform.objectives.registry import make_objective, objective_class
from triform.vocab import SpecialTokens

# Hugging Face families whose checkpoints were pretrained as masked LMs. Only folders converted before
# recipes were written need this: `triform convert` now writes the recipe itself.
MASKED_LM_TYPES = ("bert", "roberta", "distilbert")
# What a model can be used for (Recipe.uses), and the need each use asks a mixture's parts for.
USES = {"generate": "generate", "fill-mask": "fill", "classify": "read", "text2text": "write"}


@dataclass(frozen=True)
class Recipe:
    objective: str  # the objective's name
    pattern: str | None = None  # None: the pair's default pattern
    options: object = None  # an instance of the objective's Options; None: its defaults
    label_smoothing: float = 0.0
    extra: dict = field(default_factory=dict)  # room for later fields, kept as they are
    # How the documents of its packed training windows saw each other (objectives/base.py PACKS);
    # evaluation cuts and packs text the same way. Generation reads one document and ignores it.
    pack: str = "documents"
    # The mode token ("nlu", "nlg", "s2s") the model read before its input (UL2), for a part of a
    # mixture that was trained with mode tokens (`part`); None: no mode token.
    mode: str | None = None

    def __post_init__(self):
        if self.pack not in PACKS:
            raise TriformError(f"recipe: pack must be one of {list(PACKS)}, got {self.pack!r}")
        cls = objective_class(self.objective)
        if self.options is None:
            object.__setattr__(self, "options", cls.Options())
        elif not isinstance(self.options, cls.Options):
            raise TriformError(f"recipe: options of {self.objective} must be {cls.Options.__name__}")

    def build(
        self, arch: str, specials: SpecialTokens, vocab_size: int, *, tokenizer=None, packed: bool = False
    ) -> Objective:
        """The objective this recipe names, for a model of `arch` with this vocabulary (with its mode
        token put in, for a part of a mixture trained with one)."""
        built = make_objective(
            self.objective,
            specials,
            vocab_size,
            arch=arch,
            pattern=self.pattern,
            options=self.options,
            label_smoothing=self.label_smoothing,
            tokenizer=tokenizer,
            packed=packed,
            pack=self.pack,
        )
        if self.mode is None:
            return built
        return Drawn(built, self.objective, specials.mode(self.mode, f"a model trained with {self.objective}"), -1)

    def part(self, arch: str, *, use: str | None = None, need: str | None = None) -> Recipe:
        """The recipe a use of the model follows: this one, or for a mixture the part `use` names, else
        the part best at `need` ("generate", "fill", "read", "write"; objectives/mixture.py)."""
        cls = objective_class(self.objective)
        chosen = cls.part_for(self.options, arch, self.pattern, use=use, need=need)
        if chosen is None:
            if use is not None and use != self.objective:
                raise TriformError(f"use: this model was trained with {self.objective} alone, it has no part {use!r}")
            return self
        mode = chosen.mode if chosen.mode_token else None
        return Recipe(chosen.objective, chosen.pattern, chosen.options, self.label_smoothing, pack=self.pack, mode=mode)

    def uses(self, arch: str) -> dict:
        """What a model trained with this recipe can be used for, and as which part of it (a mixture's
        label, else the objective; None: it cannot): written into the model folder for people to read;
        the tools themselves ask `part`."""
        cls, found = objective_class(self.objective), {}
        for use, need in USES.items():
            try:
                chosen = cls.part_for(self.options, arch, self.pattern, need=need)
            except TriformError:  # no part of a mixture can
                found[use] = None
                continue
            if chosen is not None:
                found[use] = chosen.label
            else:
                fills = cls.fills_masks_on(arch)
                found[use] = self.objective if {"generate": not fills, "fill": fills}.get(need, True) else None
        return found

    def body_pattern(self, arch: str, writes: bool) -> str:
        """How a task reads a body trained with this recipe (Objective.body_pattern)."""
        part = self.part(arch, need="write" if writes else "read")
        pattern = check_pair(arch, part.objective, part.pattern)
        return objective_class(part.objective).body_pattern(arch, pattern, writes)

    @property
    def reads_pairs(self) -> bool:
        return objective_class(self.objective).reads_pairs

    def prompt_layout(self, arch: str, specials: SpecialTokens, use: str | None = None) -> PromptLayout:
        """How a model trained with this recipe reads a prompt (an error for one that fills masks);
        for a mixture, as the part `use` names (by default the one best at generating) read it."""
        part = self.part(arch, use=use, need="generate")
        pattern = check_pair(arch, part.objective, part.pattern)
        layout = objective_class(part.objective).layout_for(arch, pattern, specials)
        if part.mode is None:
            return layout
        return dataclasses.replace(layout, mode=specials.mode(part.mode, "generation with this model"))

    def fills_masks(self, arch: str) -> bool:
        try:
            part = self.part(arch, need="fill")
        except TriformError:  # a mixture none of whose parts fills masks
            return False
        return objective_class(part.objective).fills_masks_on(arch)

    def writes(self, arch: str) -> bool:
        return objective_class(self.objective).writes_on(arch)

    def resolved(self, arch: str) -> Recipe:
        """The recipe with its pattern made explicit (the pair's default when unset), checked."""
        pattern = objective_class(self.objective).pattern_on(arch, self.pattern, self.options)
        return dataclasses.replace(self, pattern=pattern)

    def to_dict(self) -> dict:
        values = {"objective": self.objective, "pattern": self.pattern, "options": dataclasses.asdict(self.options)}
        values["pack"] = self.pack
        if self.label_smoothing:
            values["label_smoothing"] = self.label_smoothing
        if self.mode is not None:
            values["mode"] = self.mode
        return {**values, **self.extra}

    @classmethod
    def from_dict(cls, values: dict, source: str = "recipe") -> Recipe:
        if not isinstance(values, dict) or "objective" not in values:
            raise TriformError(f"{source}: a recipe names its objective, got {values!r}")
        known = {"objective", "pattern", "options", "label_smoothing", "pack", "mode"}
        objective = objective_class(values["objective"])
        options = objective.options_from(values.get("options") or {}, f"{source}: options")
        extra = {k: v for k, v in values.items() if k not in known}
        # A recipe written before packs were recorded was trained on the plain stream.
        pack = values.get("pack", "stream")
        smoothing = values.get("label_smoothing", 0.0)
        return cls(values["objective"], values.get("pattern"), options, smoothing, extra, pack, values.get("mode"))


def default_recipe(arch: str) -> Recipe:
    """What a model folder without a recipe is taken for: a stack continues text, an encoder-decoder
    writes a target for a source."""
    return Recipe("clm" if arch == "stack" else "seq2seq")


def read_recipe(extra: dict, arch: str, source: str = "config.json") -> Recipe:
    """The recipe of a model folder from its config.json "extra" (the one reader). Folders written
    before recipes existed recorded "objective", "pattern" and "objective_options" instead; imported
    Hugging Face folders only their model type."""
    if "recipe" in extra:
        return Recipe.from_dict(extra["recipe"], f"{source}: recipe")
    if "objective" in extra:
        objective = objective_class(extra["objective"])
        saved = dict(extra.get("objective_options") or {})
        smoothing = saved.pop("label_smoothing", 0.0)
        own = {f.name for f in dataclasses.fields(objective.Options)}
        options = objective.options_from({k: v for k, v in saved.items() if k in own}, source)
        return Recipe(extra["objective"], extra.get("pattern"), options, smoothing, pack="stream")
    if extra.get("hf", {}).get("model_type") in MASKED_LM_TYPES:
        return Recipe("mlm", extra.get("pattern"))
    return default_recipe(arch)
