"""A mode token put before each document of a batch (UL2's paradigm tokens, Tay et al. 2022, §3.1.3).

Whatever the objective's layout, the token goes before the first slot of each document of a row: of
the stack's row, or of an encoder-decoder's source (the decoder reads as before). It predicts
nothing, belongs to the document it starts (so that every token of the document may see it, under
the document variant of each pattern), sits inside the document's prefix under the prefix pattern,
and is in segment 0. Rows are padded again on the right. A row with no room left within `max_len`
keeps the token only in its first documents: no text is ever cut for it.

An objective's own per-slot tensors (a batch class of its own, as ELECTRA's text before masking and
its uniform draws) get the token too where they hold integers (token ids) and 0 where they hold
numbers, so that they stay aligned with the slots.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import Tensor

from triform.objectives.batch import IGNORE, Batch

SOURCE_FIELDS = {"source_ids": "ids", "source_padding_mask": "padding_mask", "source_documents": "documents"}
# (value at an inserted slot, value at a padding slot) of the fields every batch has; None: the
# document of the slot the token comes before, or of the row's last slot.
KNOWN = {"ids": ("token", "pad"), "padding_mask": (True, False), "documents": (None, None)}
KNOWN.update({"targets": (IGNORE, IGNORE), "token_types": (0, 0)})


def with_mode_token(batch: Batch, token: int, pad_id: int, max_len: int | None = None) -> Batch:
    """`batch` with `token` before each document's first slot (at most max_len slots a row)."""
    source = batch.source_ids is not None
    ids = batch.source_ids if source else batch.ids
    mask = batch.source_padding_mask if source else batch.padding_mask
    documents = batch.source_documents if source else batch.documents
    places, real = insertions(ids, mask, documents, max_len)
    width = max(r + len(p) for r, p in zip(real, places))
    changed = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        role = SOURCE_FIELDS.get(f.name) if source else (None if f.name in SOURCE_FIELDS else f.name)
        if role is None or f.name == "prefix_lengths" or not isinstance(value, Tensor) or value.dim() != 2:
            continue
        if value.shape != ids.shape:
            continue
        numbers = value.is_floating_point() or value.dtype == torch.bool
        inserted, padding = KNOWN.get(role, (0 if numbers else token, 0))
        inserted, padding = (token if inserted == "token" else inserted), (pad_id if padding == "pad" else padding)
        changed[f.name] = spread(value, places, real, width, inserted, padding)
    if mask is None:  # every slot was real: only rows with fewer tokens inserted are padded now
        changed["source_padding_mask" if source else "padding_mask"] = spread(
            torch.ones_like(ids, dtype=torch.bool), places, real, width, True, False
        )
    mask_name = "source_padding_mask" if source else "padding_mask"
    if bool(changed[mask_name].all()):
        changed[mask_name] = None
    if not source and batch.prefix_lengths is not None:
        # One token more in the prefix of each document that got one: (B,) or (B, D).
        added = torch.zeros(ids.shape[0], batch.prefix_lengths.shape[-1] if batch.prefix_lengths.dim() == 2 else 1)
        for row, row_places in enumerate(places):
            for place in row_places:
                added[row, int(documents[row, place]) if documents is not None else 0] = 1
        prefix = batch.prefix_lengths
        changed["prefix_lengths"] = prefix + (added.long() if prefix.dim() == 2 else added[:, 0].long())
    return replace(batch, **changed)


def insertions(ids: Tensor, mask: Tensor | None, documents: Tensor | None, max_len: int | None):
    """(the slots of each row a token goes before: each document's first, while there is room; the
    real slots of each row)."""
    places, real = [], []
    for b in range(ids.shape[0]):
        n_real = int(mask[b].sum()) if mask is not None else ids.shape[1]
        docs = documents[b, :n_real].tolist() if documents is not None else [0] * n_real
        room = (max_len - n_real) if max_len is not None else n_real + 1
        starts = [i for i in range(n_real) if i == 0 or docs[i] != docs[i - 1]]
        places.append(starts[: max(room, 0)])
        real.append(n_real)
    return places, real


def spread(values: Tensor, places: list[list[int]], real: list[int], width: int, inserted, padding) -> Tensor:
    """(B, width): each row's real slots with `inserted` before the slots `places` names, then
    `padding`; None for `inserted` and `padding` copies the document of the next or the last slot."""
    rows = torch.zeros((values.shape[0], width), dtype=values.dtype)
    for b, row_places in enumerate(places):
        old, new, at = values[b, : real[b]].tolist(), [], set(row_places)
        for i, value in enumerate(old):
            if i in at:
                new.append(value if inserted is None else inserted)
            new.append(value)
        fill = (new[-1] if new else 0) if padding is None else padding
        rows[b] = torch.tensor(new + [fill] * (width - len(new)), dtype=values.dtype)
    return rows
