"""Which objective trains on which architecture under which attention pattern, and why not.

For an encoder-decoder the pattern is that of the decoder's self-attention; the encoder always
reads its source bidirectionally. The first pattern listed for a pair is its default.
"""

from __future__ import annotations

from triform.errors import IncompatiblePair
from triform.nn.masks import PATTERNS

ARCHITECTURES = ("stack", "encoder-decoder")
OBJECTIVES = ("clm", "mlm", "span", "denoise", "prefix-lm", "seq2seq")
SOURCE_TARGET = ("span", "denoise", "prefix-lm", "seq2seq")

# (architecture, objective) -> {pattern: what the pair is}; the first pattern is the default.
ALLOWED: dict[tuple[str, str], dict[str, str]] = {
    ("stack", "clm"): {"causal": "GPT: each token predicts the next"},
    ("stack", "mlm"): {
        "bidirectional": "BERT: masked tokens predicted from both sides",
        "causal": "masked tokens predicted from the left context only",
        "prefix": "masked tokens, bidirectional inside a random prefix",
        "right-to-left": "masked tokens predicted from the right context only (UniLM)",
    },
    ("encoder-decoder", "clm"): {"causal": "text split at a random point: the decoder continues what the encoder read"},
    ("encoder-decoder", "mlm"): {"causal": "the encoder reads masked text, the decoder writes it out whole"},
}
for _objective, _what in {
    "span": "T5 span corruption",
    "denoise": "BART text infilling and sentence permutation",
    "prefix-lm": "prefix LM: continue text after a random split",
    "seq2seq": "supervised source -> target",
}.items():
    ALLOWED[("encoder-decoder", _objective)] = {"causal": _what}
    ALLOWED[("stack", _objective)] = {
        "prefix": f"{_what}, source as a bidirectional prefix (UniLM)",
        "causal": f"{_what}, source and target read left to right",
    }
# ELECTRA (Clark et al. 2020): one stack, read from both sides by its generator and its discriminator.
OBJECTIVES += ("electra",)
ALLOWED[("stack", "electra")] = {
    "bidirectional": "ELECTRA: a small generator fills the masks, the model tells each token original or replaced"
}
ALLOWED[("encoder-decoder", "electra")] = {}


def refusal(arch: str, objective: str, pattern: str) -> str:
    """Why a pair that is not in ALLOWED cannot train."""
    if objective == "electra":
        if arch == "encoder-decoder":
            return "electra trains one stack to judge every token of a text, and an encoder-decoder is two; use a stack"
        return "electra's generator and discriminator read each token from both sides (Clark et al. 2020, §2)"
    if arch == "encoder-decoder":
        if pattern == "bidirectional":
            return "the decoder predicts each next target token, and a bidirectional decoder would see it"
        return "the encoder already reads the source bidirectionally, so the decoder's pattern is causal"
    if objective == "clm" and pattern in ("bidirectional", "right-to-left"):
        return f"clm predicts each next token, and a {pattern} pattern lets every position see it"
    if objective == "clm":
        return "clm predicts every token, so tokens inside a prefix would see the tokens they predict; use prefix-lm"
    if pattern == "right-to-left":
        return (
            f"{objective} predicts its target left to right, and a right-to-left pattern lets each target "
            "token see the next"
        )
    return f"{objective} predicts its target left to right, and a bidirectional pattern lets the target see itself"


def check_pair(arch: str, objective: str, pattern: str | None = None) -> str:
    """Return the pattern to use (the default when None), or raise IncompatiblePair saying why."""
    if arch not in ARCHITECTURES:
        raise IncompatiblePair(f"unknown architecture {arch!r}; expected one of {list(ARCHITECTURES)}")
    if objective not in OBJECTIVES:
        raise IncompatiblePair(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")
    allowed = ALLOWED[(arch, objective)]
    if not allowed:
        raise IncompatiblePair(f"{arch} + {objective} is refused: {refusal(arch, objective, pattern or '')}")
    if pattern is None:
        return next(iter(allowed))
    if pattern not in PATTERNS:
        raise IncompatiblePair(f"unknown attention pattern {pattern!r}; expected one of {list(PATTERNS)}")
    if pattern not in allowed:
        raise IncompatiblePair(
            f"{arch} + {objective} + {pattern} is refused: {refusal(arch, objective, pattern)} "
            f"(allowed patterns: {', '.join(allowed)})"
        )
    return pattern


def allowed_triples() -> list[tuple[str, str, str]]:
    return [(arch, objective, pattern) for (arch, objective), patterns in ALLOWED.items() for pattern in patterns]


def refused_triples() -> list[tuple[str, str, str]]:
    return [
        (arch, objective, pattern)
        for arch in ARCHITECTURES
        for objective in OBJECTIVES
        for pattern in PATTERNS
        if pattern not in ALLOWED[(arch, objective)]
    ]


def markdown_table() -> str:
    """The compatibility table as Markdown: rows are objectives, columns architectures."""
    lines = ["| objective | stack | encoder-decoder |", "|---|---|---|"]
    for objective in OBJECTIVES:
        cells = []
        for arch in ARCHITECTURES:
            patterns = list(ALLOWED[(arch, objective)])
            label = "decoder " if arch == "encoder-decoder" else ""
            cells.append(
                ", ".join(
                    f"{label}{p}" + (" (default)" if i == 0 and len(patterns) > 1 else "")
                    for i, p in enumerate(patterns)
                )
            )
        lines.append(f"| `{objective}` | {cells[0] or 'refused'} | {cells[1] or 'refused'} |")
    return "\n".join(lines)
