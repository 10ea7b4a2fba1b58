"""`triform inspect`: show what an objective makes of a text on an architecture.

It prints the model's input and target tokens after the objective's transformation and the attention
pattern as a matrix, so that the difference between GPT, BERT and T5 is visible as data, not classes.
Given a second text (`then`), both are packed in one window, as training packs its documents, and
the matrix shows the pattern within each document (`pack documents`) or across both (`pack stream`).
"""

from __future__ import annotations

import torch

from triform.nn.masks import cross_visibility, visibility
from triform.objectives import IGNORE, Batch, make_objective, objective_class
from triform.objectives.compat import ALLOWED
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


def prepared_example(arch: str, objective: str, text: str, **options):
    """(Batch of one example as the objective lays it out, the word-level tokenizer of its text); the
    options are `prepared`'s."""
    _, batch, tokenizer = prepared(arch, objective, text, **options)
    return batch, tokenizer


def prepared(
    arch: str,
    objective: str,
    text: str,
    *,
    pattern: str | None = None,
    target: str | None = None,
    seed: int = 0,
    then: str | None = None,
    pack: str = "documents",
    options: dict | None = None,
):
    """(the objective, its batch, the tokenizer). With `then`, the example is a packed window holding
    `text` and then `then`, packed by `pack`. `options` are the objective's own (a mixture's `mix` and
    `mode_tokens`)."""
    cls = objective_class(objective)
    pattern = cls.pattern_on(arch, pattern, cls.options_from(dict(options or {}), "inspect"))
    pairs = cls.reads_pairs
    if pairs and target is None:
        raise ValueError(f"the {objective} objective needs a target text (--target)")
    if pairs and then is not None:
        raise ValueError(f"the {objective} objective reads (source, target) pairs, which are never packed; drop --then")
    tokenizer = word_tokenizer(text, target or "", then or "")
    specials = SpecialTokens.from_tokenizer(tokenizer)
    built = make_objective(
        objective,
        specials,
        tokenizer.get_vocab_size(),
        arch=arch,
        pattern=pattern,
        tokenizer=tokenizer,
        packed=then is not None,
        pack=pack,
        **(options or {}),
    )
    ids = tokenizer.encode(text).ids
    if not ids or (then is not None and not tokenizer.encode(then).ids):
        raise ValueError("the text has no tokens to show")
    example = (ids, tokenizer.encode(target).ids) if pairs else ids
    if then is not None:
        example = built.packed_window([ids, tokenizer.encode(then).ids])
    return built, built.prepare([example], generator=torch.Generator().manual_seed(seed)), tokenizer


def explain_pair(
    arch: str,
    objective: str,
    text: str,
    *,
    pattern: str | None = None,
    target: str | None = None,
    seed: int = 0,
    then: str | None = None,
    pack: str = "documents",
    options: dict | None = None,
) -> str:
    built, batch, tokenizer = prepared(
        arch, objective, text, pattern=pattern, target=target, seed=seed, then=then, pack=pack, options=options
    )
    pattern = batch.pattern

    def names(row) -> list[str]:
        return [tokenizer.id_to_token(int(i)) for i in row]

    packed, within = "", " within each document" if batch.documents is not None else ""
    if then is not None:
        packed = ", each document alone" if within else ", the documents as one stream"
    if batch.part is not None:  # a mixture: the part drawn, its pattern and its mode token
        lines = drawn_lines(arch, objective, batch, tokenizer, packed, options)
    else:
        lines = [f"{arch} + {objective} + {pattern}{packed}: {ALLOWED[(arch, objective)][pattern]}", ""]
    targets = target_names(batch, names)
    if batch.source_ids is not None:
        source = token_rows(["encoder input"], [names(batch.source_ids[0])], batch.source_documents)
        decoder = token_rows(["decoder input", "target"], [names(batch.ids[0]), targets], batch.documents)
        lines += [aligned(*source), "", aligned(*decoder), ""]
        if within:
            lines.append(
                "encoder: bidirectional within each document; cross-attention: a decoder token sees the source "
                "tokens of its own document"
            )
        else:
            lines.append(
                "encoder: bidirectional over the source; cross-attention: every decoder token sees every source token"
            )
        lines.append(f"decoder self-attention ({pattern}{within}):")
    else:
        labels, rows = zip(*built.shown_rows(batch, names, seed))
        lines += [aligned(*token_rows(list(labels), list(rows), batch.documents)), ""]
        lines.append(f"attention ({pattern}{within}):")
    lines.append(pattern_matrix(batch, names(batch.ids[0])))
    return "\n".join(lines)


def drawn_lines(arch: str, objective: str, batch: Batch, tokenizer, packed: str, options: dict | None) -> list[str]:
    """The header of a mixture's example: what it mixes, the part it drew and the mode token read first."""
    cls = objective_class(objective)
    chosen = cls.part_for(cls.options_from(dict(options or {}), "inspect"), arch, None, use=batch.part)
    what = ALLOWED[(arch, chosen.objective)][chosen.pattern]
    first = batch.source_ids if batch.source_ids is not None else batch.ids
    mode = tokenizer.id_to_token(int(first[0, 0])) if chosen.mode_token else "none"
    return [
        f"{arch} + {objective}{packed}: drew {chosen.label} ({chosen.objective} + {chosen.pattern}: {what}), "
        f"probability {chosen.weight:.2f}; mode token {mode}",
        "",
    ]


def token_rows(labels: list[str], rows: list[list[str]], documents) -> tuple[list[str], list[list[str]]]:
    """The rows, and under them the document of each slot when the row packs several."""
    if documents is None:
        return labels, rows
    return [*labels, "document"], [*rows, [str(int(d)) for d in documents[0]]]


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
    allowed = self_attention(batch)
    length = len(tokens)
    label_width = max(len(t) for t in tokens) + 4
    header = " " * label_width + " ".join(f"{j % 10}" for j in range(length))
    rows = [
        f"{i:>2} {token:<{label_width - 3}}" + " ".join("■" if allowed[i, j] else "·" for j in range(length))
        for i, token in enumerate(tokens)
    ]
    return "\n".join([header, *rows])


def self_attention(batch: Batch, row: int = 0, length: int | None = None) -> torch.Tensor:
    """(T, T) booleans of row `row` of a batch (its first `length` slots): may query i see key j, as
    the model's own masks (nn/masks.py) decide from the batch's pattern, prefixes and documents."""
    length = batch.ids.shape[1] if length is None else length
    picked = slice(row, row + 1)
    prefix = batch.prefix_lengths[picked] if batch.prefix_lengths is not None else None
    documents = batch.documents[picked, :length] if batch.documents is not None else None
    mask = visibility(batch.pattern, length, length, prefix_lengths=prefix, documents=documents)
    return torch.ones(length, length, dtype=torch.bool) if mask is None else mask[0, 0]


def cross_attention(batch: Batch, row: int, n_queries: int, n_keys: int) -> torch.Tensor:
    """(T, S) booleans: may decoder token i read source token j (its own document's, when packed)."""
    picked = slice(row, row + 1)
    documents = batch.documents[picked, :n_queries] if batch.documents is not None else None
    sources = batch.source_documents[picked, :n_keys] if batch.source_documents is not None else None
    mask = cross_visibility(n_queries, None, documents, sources)
    return torch.ones(n_queries, n_keys, dtype=torch.bool) if mask is None else mask[0, 0].expand(n_queries, n_keys)
