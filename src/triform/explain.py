"""`triform inspect`: show what an objective makes of a text on an architecture.

It prints the model's input and target tokens after the objective's transformation and the attention
pattern as a matrix, so that the difference between GPT, BERT and T5 is visible as data, not classes.
"""

from __future__ import annotations

import torch

from triform.nn.masks import visibility
from triform.objectives import IGNORE, Batch, make_objective, objective_class
from triform.objectives.compat import ALLOWED, check_pair
from triform.vocab import SpecialTokens, special_token_strings

N_SENTINELS = 32


def word_tokenizer(*texts: str):
    """A word-level `tokenizers.Tokenizer` over the words of `texts`, with triform's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    pre_tokenizer = pre_tokenizers.Whitespace()
    vocabulary = {token: i for i, token in enumerate(special_token_strings(N_SENTINELS))}
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(text):
            vocabulary.setdefault(word, len(vocabulary))
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizer
    return tokenizer


def prepared_example(
    arch: str, objective: str, text: str, *, pattern: str | None = None, target: str | None = None, seed: int = 0
):
    """(Batch of one example as the objective lays it out, the word-level tokenizer of its text)."""
    pattern = check_pair(arch, objective, pattern)
    pairs = objective_class(objective).reads_pairs
    if pairs and target is None:
        raise ValueError(f"the {objective} objective needs a target text (--target)")
    tokenizer = word_tokenizer(text, target or "")
    specials = SpecialTokens.from_tokenizer(tokenizer)
    built = make_objective(
        objective, specials, tokenizer.get_vocab_size(), arch=arch, pattern=pattern, tokenizer=tokenizer
    )
    ids = tokenizer.encode(text).ids
    if not ids:
        raise ValueError("the text has no tokens to show")
    example = (ids, tokenizer.encode(target).ids) if pairs else ids
    return built.prepare([example], generator=torch.Generator().manual_seed(seed)), tokenizer


def explain_pair(
    arch: str, objective: str, text: str, *, pattern: str | None = None, target: str | None = None, seed: int = 0
) -> str:
    batch, tokenizer = prepared_example(arch, objective, text, pattern=pattern, target=target, seed=seed)
    pattern = batch.pattern

    def names(row) -> list[str]:
        return [tokenizer.id_to_token(int(i)) for i in row]

    lines = [f"{arch} + {objective} + {pattern}: {ALLOWED[(arch, objective)][pattern]}", ""]
    if batch.source_ids is not None:
        lines += [aligned(["encoder input"], [names(batch.source_ids[0])]), ""]
        lines += [aligned(["decoder input", "target"], [names(batch.ids[0]), target_names(batch, names)]), ""]
        lines.append(
            "encoder: bidirectional over the source; cross-attention: every decoder token sees every source token"
        )
        lines.append(f"decoder self-attention ({pattern}):")
    else:
        lines += [aligned(["input", "target"], [names(batch.ids[0]), target_names(batch, names)]), ""]
        lines.append(f"attention ({pattern}):")
    lines.append(pattern_matrix(batch, names(batch.ids[0])))
    return "\n".join(lines)


def target_names(batch: Batch, names) -> list[str]:
    return ["·" if int(t) == IGNORE else names([t])[0] for t in batch.targets[0]]


def aligned(labels: list[str], rows: list[list[str]]) -> str:
    """Rows of tokens in columns, each column as wide as its widest token."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    label_width = max(len(label) for label in labels)
    return "\n".join(
        f"{label:<{label_width}}  " + "  ".join(f"{token:^{width}}" for token, width in zip(row, widths))
        for label, row in zip(labels, rows)
    )


def pattern_matrix(batch: Batch, tokens: list[str]) -> str:
    """Row i attends to column j where the cell is ■ (query i, key j)."""
    length = len(tokens)
    mask = visibility(batch.pattern, length, length, prefix_lengths=batch.prefix_lengths)
    allowed = torch.ones(length, length, dtype=torch.bool) if mask is None else mask[0, 0]
    label_width = max(len(t) for t in tokens) + 4
    header = " " * label_width + " ".join(f"{j % 10}" for j in range(length))
    rows = [
        f"{i:>2} {token:<{label_width - 3}}" + " ".join("■" if allowed[i, j] else "·" for j in range(length))
        for i, token in enumerate(tokens)
    ]
    return "\n".join([header, *rows])
