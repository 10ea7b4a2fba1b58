"""Pictures of what an objective makes of a text: the input and target tokens above, the attention
pattern below (who sees whom), drawn with matplotlib's Agg backend into a PNG.

The same picture serves `triform inspect --png` and the demo's report. For an encoder-decoder it
shows the three attention patterns of the model: the encoder's (always bidirectional), the
decoder's own (the objective's pattern) and the cross-attention from decoder to encoder. A row that
packs several documents shows the document of each token, and the pattern within each.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from triform.explain import cross_attention, self_attention
from triform.nn.masks import in_prefix, visibility
from triform.objectives import IGNORE, Batch
from triform.train.plots import pyplot, save_figure
from triform.vocab import tokenizer_kind

SEEN, HIDDEN = "#3b6fb6", "#f1f1f1"
HIGHLIGHT = {"[MASK]": "#f4a261", "target": "#2a9d8f", "prefix": "#dbe7f6"}
MAX_TOKENS = 40  # beyond this the labels are unreadable: a picture shows the first MAX_TOKENS


def allowed(pattern: str, n_queries: int, n_keys: int, documents: torch.Tensor | None = None) -> torch.Tensor:
    """(n_queries, n_keys) booleans: may query i attend to key j (`documents` (n_keys,), packed)."""
    mask = visibility(pattern, n_queries, n_keys, documents=None if documents is None else documents[None])
    return torch.ones(n_queries, n_keys, dtype=torch.bool) if mask is None else mask[0, 0]


def real_length(mask: torch.Tensor | None, row: int, width: int) -> int:
    return width if mask is None else int(mask[row].sum())


def draw_batch(batch: Batch, names, path: str | os.PathLike, *, title: str = "", row: int = 0) -> Path:
    """Draw row `row` of a Batch: tokens (`names(ids) -> list[str]`), targets and attention patterns."""
    plt = pyplot()
    length = min(real_length(batch.padding_mask, row, batch.ids.shape[1]), MAX_TOKENS)
    inputs = names(batch.ids[row, :length].tolist())
    targets = [None if int(t) == IGNORE else t for t in batch.targets[row, :length].tolist()]
    target_names = [names([t])[0] if t is not None else "" for t in targets]
    within = " within each document" if batch.documents is not None else ""
    if batch.source_ids is None:
        matrices = [(f"self-attention: {batch.pattern}{within}", self_attention(batch, row, length), inputs, inputs)]
        rows = [("input", inputs, prefix_slots(batch, row, length)), ("target", target_names, None)]
    else:
        source_length = min(real_length(batch.source_padding_mask, row, batch.source_ids.shape[1]), MAX_TOKENS)
        source = names(batch.source_ids[row, :source_length].tolist())
        sources = batch.source_documents[row, :source_length] if batch.source_documents is not None else None
        matrices = [
            (
                f"encoder self-attention: bidirectional{within}",
                allowed("bidirectional", source_length, source_length, sources),
                source,
                source,
            ),
            (f"decoder self-attention: {batch.pattern}{within}", self_attention(batch, row, length), inputs, inputs),
            (
                f"cross-attention: decoder reads encoder{within}",
                cross_attention(batch, row, length, source_length),
                source,
                inputs,
            ),
        ]
        rows = [("encoder input", source, None), ("decoder input", inputs, None), ("target", target_names, None)]
        if sources is not None:
            rows.insert(1, ("source document", [str(int(d)) for d in sources], None))
    if batch.documents is not None:
        rows.append(("document", [str(int(d)) for d in batch.documents[row, :length]], None))
    widest = max(len(keys) for _, _, keys, _ in matrices)
    tallest = max(len(queries) for _, _, _, queries in matrices)
    width = max(6.0, 1.6 + 0.32 * sum(len(keys) for _, _, keys, _ in matrices) + 1.4 * len(matrices))
    token_height = 0.42 * len(rows)
    figure = plt.figure(figsize=(width, token_height + 1.6 + 0.3 * tallest + 0.05 * widest))
    grid = figure.add_gridspec(
        2,
        len(matrices),
        height_ratios=[token_height, 0.3 * tallest + 0.6],
        width_ratios=[max(len(k), 4) for _, _, k, _ in matrices],
        hspace=0.25,
        wspace=0.5,
    )
    draw_token_rows(figure.add_subplot(grid[0, :]), rows)
    for column, (label, mask, keys, queries) in enumerate(matrices):
        draw_matrix(figure.add_subplot(grid[1, column]), mask, keys, queries, label)
    if title:
        figure.suptitle(title, fontsize=11, y=1.0)
    return save_figure(figure, path)


def prefix_slots(batch: Batch, row: int, length: int) -> list[bool] | None:
    """Whether each of the first `length` slots of a row lies in a prefix (its document's, packed)."""
    if batch.prefix_lengths is None:
        return None
    if batch.documents is None:
        return [slot < int(batch.prefix_lengths[row]) for slot in range(length)]
    documents = batch.documents[row : row + 1, :length]
    return in_prefix(documents, batch.prefix_lengths[row : row + 1])[0].tolist()


def draw_token_rows(axis, rows) -> None:
    """One line of boxed tokens per row; [MASK] and predicted tokens coloured, the prefix shaded."""
    width = max(len(tokens) for _, tokens, _ in rows)
    axis.set_xlim(-2.6, width)
    axis.set_ylim(-len(rows) + 0.4, 0.6)
    axis.axis("off")
    for r, (label, tokens, prefix) in enumerate(rows):
        axis.text(-0.6, -r, label, ha="right", va="center", fontsize=9, color="#444")
        for c, token in enumerate(tokens):
            colour = "white"
            if token == "[MASK]":
                colour = HIGHLIGHT["[MASK]"]
            elif label == "target" and token:
                colour = HIGHLIGHT["target"]
            elif prefix is not None and prefix[c]:
                colour = HIGHLIGHT["prefix"]
            axis.add_patch(plt_rectangle((c - 0.47, -r - 0.38), 0.94, 0.76, colour))
            text_colour = "white" if colour == HIGHLIGHT["target"] else "black"
            size = 7.5 if len(token) <= 5 else max(5.5, 7.5 * 5 / len(token))  # long tokens shrink to fit their box
            axis.text(c, -r, token, ha="center", va="center", fontsize=size, color=text_colour)


def plt_rectangle(corner, width, height, colour):
    from matplotlib.patches import Rectangle

    return Rectangle(corner, width, height, facecolor=colour, edgecolor="#999", linewidth=0.6)


def draw_matrix(axis, mask: torch.Tensor, keys: list[str], queries: list[str], label: str) -> None:
    from matplotlib.colors import ListedColormap

    axis.imshow(mask.int().numpy(), cmap=ListedColormap([HIDDEN, SEEN]), vmin=0, vmax=1, aspect="equal")
    axis.set_xticks(range(len(keys)), keys, rotation=90, fontsize=7)
    axis.set_yticks(range(len(queries)), queries, fontsize=7)
    axis.set_xticks([x - 0.5 for x in range(1, len(keys))], minor=True)
    axis.set_yticks([y - 0.5 for y in range(1, len(queries))], minor=True)
    axis.grid(which="minor", color="white", linewidth=0.5)
    axis.tick_params(which="minor", length=0)
    axis.set_xlabel("key (is seen)", fontsize=8)
    axis.set_ylabel("query (sees)", fontsize=8)
    axis.set_title(label, fontsize=9)


def display_names(tokenizer):
    """`names(ids) -> list[str]`: tokens as a reader should see them, a leading space shown as '▁'.

    A byte-level BPE token is a run of bytes, and one character may be split over two tokens ('ß' is
    two bytes in UTF-8); its token strings ('Ã', 'Ł') mean nothing to a reader. So each token is
    shown as the text it completes when the tokens before it are decoded with it, and a token that
    only begins a character shows '·' (the character follows on the next token)."""
    added = set(tokenizer.get_added_tokens_decoder())  # special tokens and sentinels, shown as they are

    def raw(token_id: int) -> str:
        return tokenizer.id_to_token(token_id) or f"<{token_id}>"

    if tokenizer_kind(tokenizer) != "bpe":
        return lambda ids: [raw(int(i)) for i in ids]

    def names(ids: list[int]) -> list[str]:
        shown, run, before = [], [], ""
        for token_id in map(int, ids):
            if token_id in added:
                shown.append(raw(token_id))
                run, before = [], ""
                continue
            run.append(token_id)
            text = tokenizer.decode(run, skip_special_tokens=False).rstrip("\ufffd")  # drop an unfinished character
            piece = text[len(before) :] if text.startswith(before) else tokenizer.decode([token_id])
            shown.append(piece.replace(" ", "▁") if piece else "·")
            before = text
        return shown

    return names
