"""Mixtures of objectives: one set of weights trained as every family (UniLM, Dong et al. 2019; UL2,
Tay et al. 2022).

Each micro-batch draws one part of the mixture, with the part's weight as its probability, from the
generator the trainer seeds with (run seed, step): the draws are those of an uninterrupted run after
a resume, as the masks are. A part is any registered objective with its own pattern, options and
mode token; every part is checked against the architecture when the mixture is built, and a refused
one is named before any compute. The drawn part lays the batch out and scores it; the batch carries
the part's label (`Batch.part`), so that its loss is logged apart.

Mode tokens (UL2's paradigm tokens, §3.1.3): with `mode_tokens`, the part's token ([NLU], [NLG] or
[S2S], vocab.py) is put before what the model reads first, once per document of a packed row (the
stack's row, or an encoder-decoder's source), as UL2 prepends it to each example's input. Windows are
cut shorter to leave room for them; a row of many short documents that still has no room leaves the
token out of its last documents rather than cut any text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from triform.errors import IncompatiblePair, TriformError
from triform.nn.masks import PATTERNS
from triform.objectives.base import Objective, Windows, as_sequences
from triform.objectives.batch import Batch
from triform.objectives.compat import check_pair
from triform.objectives.modes import with_mode_token
from triform.vocab import MODE_TOKENS

# The paradigm of each objective when a part names none (UL2 §3.1.3): reading a corrupted text
# whole ([NLU]), writing a long part of it ([NLG]), or continuing a text or a source ([S2S]).
PARADIGMS = {"mlm": "nlu", "span": "nlu", "denoise": "nlg", "clm": "s2s", "prefix-lm": "s2s", "seq2seq": "s2s"}


@dataclass(frozen=True)
class Part:
    """One objective of a mixture, as configured: plain values, as the recipe stores them."""

    objective: str
    weight: float
    pattern: str | None = None  # None: the mixture's pattern, else the pair's default
    options: dict = field(default_factory=dict)  # values of the objective's Options
    mode: str | None = None  # "nlu", "nlg" or "s2s"; None: PARADIGMS, else "nlu"
    label: str = ""  # how logs, `inspect` and `use=` name it; by default the objective's name

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v not in (None, {}, "")}


@dataclass(frozen=True)
class MixtureOptions:
    mix: tuple = ()  # the parts, each a dict of Part's fields (the recipe's plain values)
    mode_tokens: bool = False  # put each part's mode token before its input (UL2 §3.1.3)


def parse_mix(value, catalog: dict, source: str = "objective.mix") -> tuple[dict, ...]:
    """The parts of `--objective.mix`: {"clm": 0.5, "mlm@causal": 0.5}, {"mlm": {"weight": 1, "pattern":
    ...}}, or a list of {"objective": ..., "weight": ..., "pattern", "options", "mode", "label"}."""
    if isinstance(value, dict):
        items = []
        for key, given in value.items():
            name, _, pattern = str(key).partition("@")
            values = dict(given) if isinstance(given, dict) else {"weight": given}
            items.append({"objective": name, "label": key, **({"pattern": pattern} if pattern else {}), **values})
    elif isinstance(value, (list, tuple)):
        items = [dict(item) if isinstance(item, dict) else {"objective": item} for item in value]
    else:
        raise TriformError(f"{source}: expected a table of objective -> weight, or a list of parts, got {value!r}")
    if not items:
        raise TriformError(f"{source}: a mixture needs at least one objective")
    parts = [checked_part(item, catalog, f"{source}[{index}]") for index, item in enumerate(items)]
    labels = [p.label for p in parts]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise TriformError(f"{source}: two parts are labelled {repeated[0]!r}; give each its own label")
    return tuple(p.to_dict() for p in parts)


def checked_part(item: dict, catalog: dict, source: str) -> Part:
    known = set(Part.__dataclass_fields__)
    unknown = sorted(set(item) - known)
    if unknown:
        raise TriformError(f"{source}: unknown field {unknown[0]!r}; expected {sorted(known)}")
    name = item.get("objective")
    if name not in catalog or issubclass(catalog[name], Mixture):
        singles = [n for n, c in catalog.items() if not issubclass(c, Mixture)]
        raise TriformError(f"{source}: unknown objective {name!r}; expected one of {singles}")
    if catalog[name].reads_pairs:
        raise TriformError(f"{source}: {name} reads (source, target) pairs; a mixture draws from one text stream")
    weight = item.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or math.isinf(weight):
        raise TriformError(f"{source}: weight of {name}: expected a positive number, got {weight!r}")
    if item.get("pattern") is not None and item["pattern"] not in PATTERNS:
        raise TriformError(f"{source}: pattern of {name}: expected one of {list(PATTERNS)}, got {item['pattern']!r}")
    if item.get("mode") is not None and item["mode"] not in MODE_TOKENS:
        raise TriformError(f"{source}: mode of {name}: expected one of {list(MODE_TOKENS)}, got {item['mode']!r}")
    catalog[name].options_from(dict(item.get("options") or {}), f"{source}: options")  # names a wrong option
    return Part(
        name,
        float(weight),
        item.get("pattern"),
        dict(item.get("options") or {}),
        item.get("mode") or PARADIGMS.get(name, "nlu"),
        str(item.get("label") or name),
    )


@dataclass(frozen=True)
class Chosen:
    """A part resolved for an architecture: what a use of a mixture-trained model follows."""

    objective: str
    pattern: str
    options: object  # an instance of the objective's Options
    mode: str  # its paradigm
    label: str
    weight: float
    mode_token: bool  # whether the model read the part's mode token


class Mixture(Objective):
    """A mixture of any registered objectives (`--objective.mix`)."""

    name = "mixture"
    Options = MixtureOptions
    catalog: ClassVar[dict] = {}  # every objective by name; set by objectives/registry.py

    # --- the parts -------------------------------------------------------------------------------
    @classmethod
    def parts_of(cls, options) -> tuple[Part, ...]:
        return tuple(Part(**values) for values in options.mix)

    @classmethod
    def default_pattern(cls, arch: str) -> str | None:
        """The pattern of parts that set none, when the mixture sets none either: each pair's default."""
        return None

    @classmethod
    def options_from(cls, values: dict, source: str = "objective"):
        known = {"mix", "mode_tokens"} & set(cls.Options.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise TriformError(
                f"{source}: the {cls.name} objective has no option {unknown[0]!r} (its options: "
                f"{', '.join(sorted(known))})"
            )
        chosen = dict(values)
        if "mix" in chosen:
            chosen["mix"] = parse_mix(chosen["mix"], cls.catalog, f"{source}: mix")
        return cls.Options(**chosen)

    @classmethod
    def chosen(cls, options, arch: str, pattern: str | None) -> list[Chosen]:
        """Every part with its pattern checked on `arch`; a refused one is named (IncompatiblePair)."""
        parts = cls.parts_of(options)
        if not parts:
            raise TriformError(f"the {cls.name} objective needs its parts (objective.mix)")
        total = sum(p.weight for p in parts)
        found = []
        for part in parts:
            wanted = part.pattern or pattern or cls.default_pattern(arch)
            try:
                resolved = check_pair(arch, part.objective, wanted)
            except IncompatiblePair as error:
                raise IncompatiblePair(f"{cls.name} part {part.label!r}: {error}") from None
            part_options = cls.catalog[part.objective].options_from(dict(part.options), f"{part.label}: options")
            found.append(
                Chosen(
                    part.objective,
                    resolved,
                    part_options,
                    part.mode,
                    part.label,
                    part.weight / total,
                    options.mode_tokens,
                )
            )
        return found

    @classmethod
    def pattern_on(cls, arch: str, pattern: str | None, options=None) -> str | None:
        """The mixture's own pattern (None: each part its own), once every part is checked on `arch`."""
        if pattern is not None and pattern not in PATTERNS:
            raise IncompatiblePair(f"unknown attention pattern {pattern!r}; expected one of {list(PATTERNS)}")
        cls.chosen(options if options is not None else cls.Options(), arch, pattern)
        return pattern if pattern is not None else cls.default_pattern(arch)

    @classmethod
    def part_for(cls, options, arch: str, pattern: str | None, *, use: str | None = None, need: str | None = None):
        """The part a use follows: the one `use` names (its label, objective or mode), else the first
        part that can do what is needed ("generate", "fill", "read", "write"), preferring the part
        that does it best (objectives.mixture.PREFERRED)."""
        parts = cls.chosen(options, arch, pattern)
        if use is not None:
            for part in parts:
                if use in (part.label, part.objective, part.mode):
                    return part
            names = ", ".join(p.label for p in parts)
            raise TriformError(f"use: this model's mixture has no part {use!r} (its parts: {names})")
        able = [p for p in parts if can(cls.catalog[p.objective], p, arch, need)]
        if not able:
            raise TriformError(f"no part of this model's mixture can {need} ({', '.join(p.label for p in parts)})")
        best = [p for p in able if PREFERRED.get(need, lambda part, c, a: False)(p, cls.catalog[p.objective], arch)]
        return (best or able)[0]

    # --- training --------------------------------------------------------------------------------
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parts, chosen_parts = [], self.chosen(self.options, self.arch, self.pattern)
        for chosen in chosen_parts:
            built = self.catalog[chosen.objective](
                self.specials,
                self.vocab_size,
                arch=self.arch,
                pattern=chosen.pattern,
                label_smoothing=self.label_smoothing,
                options=chosen.options,
                packed=self.packed,
                pack=self.pack,
                tokenizer=self.tokenizer,
            )
            mode = self.specials.mode(chosen.mode, f"the {self.name} objective") if self.options.mode_tokens else None
            self.parts.append(Drawn(built, chosen.label, mode, self.separator))
        self.weights = torch.tensor([c.weight for c in chosen_parts])
        self.by_label = {part.label: part for part in self.parts}

    def draw(self, generator: torch.Generator | None) -> Drawn:
        """One part, with probability its weight."""
        draw = float(torch.rand(1, generator=generator))
        index = int(torch.searchsorted(self.weights.cumsum(0), torch.tensor(draw), right=True))
        return self.parts[min(index, len(self.parts) - 1)]

    def windows(self, max_len: int) -> Windows:
        """Windows every part lays out within max_len, less room for mode tokens (one per document of
        at least 32 tokens), separated by [EOS]: each part turns [EOS] into its own separator."""
        room = 1 + max_len // 32 if self.options.mode_tokens else 0
        length = min(part.objective.windows(max_len - room).length for part in self.parts)
        for part in self.parts:
            part.max_len = max_len
        return Windows(length, length)

    def prepare(self, examples, generator=None) -> Batch:
        return self.draw(generator).prepare(examples, generator)

    def part_of(self, batch: Batch) -> Drawn:
        if batch.part not in self.by_label:
            raise TriformError(f"a batch of the {self.name} objective names no part of it ({batch.part!r})")
        return self.by_label[batch.part]

    def loss(self, logits, batch: Batch):
        return self.part_of(batch).loss(logits, batch)

    def training_module(self, model):
        """What the trainer runs: the model, or the module a part trains beside it (ELECTRA's generator
        and head), which then runs every part's batches; two such parts would need two, and are refused."""
        plain = getattr(Objective, "training_module", None)
        own = [p for p in self.parts if getattr(type(p.objective), "training_module", plain) is not plain]
        if len(own) > 1:
            raise TriformError(
                f"a mixture trains modules of one part's own at most; {own[0].label} and {own[1].label} both have them"
            )
        return own[0].objective.training_module(model) if own else model

    def compute(self, batch: Batch, parameters: dict):
        """The compute of a batch (`triform compare`), as the part that made it counts it."""
        return self.part_of(batch).compute(batch, parameters)

    def shown_rows(self, batch: Batch, names, seed: int = 0):
        """What `triform inspect` shows of a batch: as the part that made it shows it."""
        return self.part_of(batch).shown_rows(batch, names, seed)

    def n_targets(self, batch: Batch) -> int:
        return self.part_of(batch).n_targets(batch)

    @torch.no_grad()
    def evaluate(self, model, data, context) -> dict:
        """Each part evaluated on the same validation windows; the loss is their mean, weighted as drawn."""
        results = {part.label: part.evaluate(model, data, context) for part in self.parts}
        weights = dict(zip(self.by_label, self.weights.tolist()))
        loss = sum(weights[label] * r["loss"] for label, r in results.items())
        accuracy = sum(weights[label] * r["accuracy"] for label, r in results.items())
        summary = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50)),
            "accuracy": accuracy,
            "tokens": sum(r["tokens"] for r in results.values()),
        }
        return {**summary, **{f"loss/{label}": r["loss"] for label, r in results.items()}}

    def summary(self, result: dict) -> str:
        parts = ", ".join(f"{label} {result[f'loss/{label}']:.3f}" for label in self.by_label)
        return f"{super().summary(result)} | {parts}"

    def masked_inputs(self, sequences):
        return self.part_for_use("fill").masked_inputs(sequences)

    def part_for_use(self, need: str) -> Drawn:
        return self.by_label[self.part_for(self.options, self.arch, self.pattern, need=need).label]

    @property
    def fills_masks(self) -> bool:
        return any(part.fills_masks for part in self.parts)

    def describe(self) -> str:
        parts = ", ".join(f"{p.label} {w:.2f}" for p, w in zip(self.parts, self.weights.tolist()))
        modes = " with mode tokens" if self.options.mode_tokens else ""
        return f"{self.arch} + {self.name} ({parts}){modes}"


class Drawn:
    """One part of a mixture: its objective, with the windows turned to its own separator, its mode
    token put in, and its label on the batch. Anything else is the objective's own."""

    def __init__(self, objective: Objective, label: str, mode: int | None, separator: int):
        self.objective, self.label, self.mode, self.stream_separator = objective, label, mode, separator
        self.max_len: int | None = None

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def own_windows(self, examples):
        """The mixture's windows separate documents by [EOS]; the part may separate them otherwise."""
        own = self.objective.separator
        if not self.objective.packed or own == self.stream_separator:
            return examples
        return [[own if t == self.stream_separator else t for t in s] for s in as_sequences(examples)]

    def prepare(self, examples, generator=None) -> Batch:
        batch = self.objective.prepare(self.own_windows(examples), generator)
        if self.mode is not None:
            batch = with_mode_token(batch, self.mode, self.objective.specials.pad, self.max_len)
        return replace(batch, part=self.label)

    def collate(self, examples, generator, part=None) -> Batch:
        return Objective.collate(self, examples, generator, part)

    def evaluate(self, model, data, context) -> dict:
        """The objective's own evaluation, on batches laid out as this part lays them out."""
        return type(self.objective).evaluate(self, model, data, context)

    def masked_inputs(self, sequences) -> Batch:
        batch = self.objective.masked_inputs(sequences)
        return batch if self.mode is None else with_mode_token(batch, self.mode, self.objective.specials.pad)


def can(objective: type[Objective], part: Chosen, arch: str, need: str | None) -> bool:
    """Whether a model trained with this part can do what is needed: fill masks, or generate text
    (every part that does not fill masks continues text or writes a target)."""
    if need == "fill":
        return objective.fills_masks_on(arch)
    if need == "generate":
        return not objective.fills_masks_on(arch)
    return True


# Among the parts that can, the one preferred for each need: continuing text in the paradigm that
# learned it ([S2S]); masks filled from both sides; a task read where the part saw both sides, or
# written as a target after a source.
PREFERRED = {
    "generate": lambda part, objective, arch: part.mode == "s2s",
    "fill": lambda part, objective, arch: part.pattern == "bidirectional",
    "read": lambda part, objective, arch: objective.body_pattern(arch, part.pattern, False) == "bidirectional",
    "write": lambda part, objective, arch: part.mode == "s2s" and objective.source_target(arch),
}
