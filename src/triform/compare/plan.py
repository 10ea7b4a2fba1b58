"""What `triform compare` trains: every allowed architecture x objective pair that pretrains on plain
text, plus a model with no pretraining, each given the same compute.

Compute is counted as tokens x parameters: each token processed in training times the
non-embedding parameters it passes through (Kaplan et al. 2020 count C = 6 N D with the same N).
On a stack every token passes through the whole stack; on an encoder-decoder a source token passes
through the encoder and a target token through the decoder, so an encoder-decoder with L + L layers
costs about what a stack of L layers costs per token, with twice the parameters — the comparison
of the T5 paper's Table 2 (Raffel et al. 2020, §3.2.2).

The objectives come from the registry (objectives/registry.py) and the allowed pairs from its
compatibility table, so an objective registered there is compared without this file naming it; one
that decides its own patterns (`pattern_on`, as a mixture checks its parts) is compared at its
default pattern on each architecture that accepts it. A pair is written `arch:objective[:pattern]`,
and an objective may carry its own options in parentheses: `stack:mlm(rate=0.3,whole_word=true)`,
or, for an option that takes a mapping (a mixture's parts, say), YAML's flow style:
`name={clm: 0.5, mlm: 0.5}`; the objective reads
them (`Objective.options_from`), so what an option means is the objective's business.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml

from triform.errors import IncompatiblePair, TriformError
from triform.objectives import ALLOWED, OBJECTIVE_CLASSES, check_pair, objective_class
from triform.objectives.compat import ARCHITECTURES, allowed_triples

NONE = "none"  # the no-pretraining baseline: the fine-tuning alone
TASKS = ("next-token", "masked-token", "restore")  # the held-out tasks made from the text itself
TASK_OBJECTIVE = {"next-token": "clm", "masked-token": "mlm", "restore": "seq2seq"}
PAIR = re.compile(r"(?P<arch>[\w-]+):(?P<objective>[\w-]+)(?:\((?P<options>[^()]*)\))?(?::(?P<pattern>[\w-]+))?")
EXAMPLE = "e.g. stack:clm, encoder-decoder:span, stack:mlm:causal or stack:mlm(rate=0.3)"


def pretraining_objectives() -> list[str]:
    """Every registered objective that learns from plain text (seq2seq needs pairs: a task here)."""
    return [name for name, cls in OBJECTIVE_CLASSES.items() if not cls.reads_pairs]


@dataclass(frozen=True)
class Entry:
    arch: str
    objective: str  # a pretraining objective, or "none"
    pattern: str | None
    options: tuple[tuple[str, object], ...] = ()  # the objective's own options, as given in the pair

    @property
    def spec(self) -> str:
        """The objective as written in a pair: its name, and its options in parentheses."""
        given = ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in self.options)
        return f"{self.objective}({given})" if self.options else self.objective

    @property
    def label(self) -> str:
        if self.objective == NONE:
            return f"{self.arch}, no pretraining"
        # A mixture of parts under patterns of their own has no one pattern
        return f"{self.arch} + {self.spec} + {self.pattern or 'patterns of its parts'}"

    @property
    def key(self) -> str:
        """A folder name: the label's words, with the options' punctuation dropped."""
        words = [self.arch, re.sub(r"[^\w.-]+", "-", self.spec).strip("-")] + ([self.pattern] if self.pattern else [])
        return "-".join(words)


def entries(patterns: str = "default", pairs: list[str] | None = None, baseline: bool = True) -> list[Entry]:
    """The pairs to pretrain, at their default pattern or every allowed one; `pairs` keeps only
    those named `arch:objective[(options)][:pattern]`."""
    if patterns not in ("default", "all"):
        raise TriformError(f"--patterns: expected default or all, got {patterns!r}")
    if pairs:
        chosen = [entry for pair in pairs for entry in named_entries(pair, patterns)]
        chosen = list({entry.label: entry for entry in chosen}.values())  # a pair named twice runs once
    else:
        chosen = [e for e in all_entries() if patterns == "all" or is_default(e)]
    if baseline:
        chosen += [
            Entry(arch, NONE, None) for arch in ("stack", "encoder-decoder") if any(e.arch == arch for e in chosen)
        ]
    return chosen


def named_entries(pair: str, patterns: str) -> list[Entry]:
    """The entries one `--pairs` item names: at its pattern, or at the default (or every) pattern."""
    match = PAIR.fullmatch(pair.strip())
    if match is None:
        raise TriformError(f"--pairs: {pair!r} is not arch:objective[(options)][:pattern]; {EXAMPLE}")
    arch, objective, pattern = match["arch"], match["objective"], match["pattern"]
    if objective not in pretraining_objectives():
        raise TriformError(
            f"--pairs: {pair!r} names no objective that pretrains on plain text; "
            f"expected one of {pretraining_objectives()}"
        )
    options = parse_options(match["options"], pair)
    try:
        chosen = pattern_for(arch, objective, pattern, options, f"--pairs {pair}")
    except IncompatiblePair as error:
        raise TriformError(f"--pairs: {pair!r} is not an allowed pretraining pair: {error}") from None
    if pattern is not None or patterns == "default" or (arch, objective) not in ALLOWED:
        return [Entry(arch, objective, chosen, options)]
    return [Entry(a, o, p, options) for a, o, p in allowed_triples() if (a, o) == (arch, objective)]


def pattern_for(arch: str, objective: str, pattern: str | None, options=(), source: str = "--pairs") -> str:
    """The pattern a pair trains under (its default for None), or IncompatiblePair saying why not: the
    compatibility table's answer, or the objective's own where it decides its patterns (`pattern_on`:
    a mixture's are its parts')."""
    cls = objective_class(objective)
    checked = cls.options_from(dict(options), source)  # an unknown option is named here
    decides = getattr(cls, "pattern_on", None)
    return check_pair(arch, objective, pattern) if decides is None else decides(arch, pattern, checked)


def parse_options(text: str | None, pair: str) -> tuple[tuple[str, object], ...]:
    """`rate=0.3,whole_word=true` -> (("rate", 0.3), ("whole_word", True)); a value is read as JSON,
    else as YAML's flow style (`{clm: 0.5, mlm: 0.5}`, `[a, b]`), else as text. Commas inside
    brackets or braces belong to the value."""
    if not text or not text.strip():
        return ()
    options = []
    for item in top_level_items(text):
        name, equals, raw = item.partition("=")
        if not equals or not name.strip():
            raise TriformError(f"--pairs: {pair!r}: expected name=value between the parentheses, got {item!r}")
        options.append((name.strip(), read_value(raw.strip())))
    return tuple(options)


def top_level_items(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for character in text:
        depth += (character in "[{") - (character in "]}")
        if character == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += character
    return items + [current]


def read_value(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    if raw[:1] in "[{":
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            pass
    return raw


def is_default(entry: Entry) -> bool:
    return entry.pattern == pattern_for(entry.arch, entry.objective, None, entry.options)


def all_entries() -> list[Entry]:
    """Every allowed pair of the table, and each objective outside it at its default pattern on
    each architecture that accepts it with its default options."""
    wanted = pretraining_objectives()
    found = [Entry(a, o, p) for a, o, p in allowed_triples() if o in wanted]
    for objective in wanted:
        for arch in ARCHITECTURES:
            if (arch, objective) in ALLOWED:
                continue
            try:
                found.append(Entry(arch, objective, pattern_for(arch, objective, None)))
            except (IncompatiblePair, TriformError):
                continue  # it needs options to train here (a mixture's parts)
    return found


def finetune_pattern(arch: str, task: str) -> str:
    """The pattern each task trains under: the default of its objective on the architecture."""
    return pattern_for(arch, TASK_OBJECTIVE[task], None)
