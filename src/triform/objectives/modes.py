"""A mode token put before each document of a batch (UL2's paradigm tokens, Tay et al. 2022, §3.1.3).

Whatever the objective's layout, the token goes before the first slot of each document of a row: of
the stack's row, or of an encoder-decoder's source (the decoder reads as before). It predicts
nothing, belongs to the document it starts (so that every token of the document may see it, under
the document variant of each pattern), sits inside the document's prefix under the prefix pattern,
and is in segment 0. Rows are padded again on the right. A row with no room left within `max_len`
keeps the token only in its first documents: no text is ever cut for it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from triform.objectives.batch import IGNORE, Batch, pad, pad_documents, pad_targets


def with_mode_token(batch: Batch, token: int, pad_id: int, max_len: int | None = None) -> Batch:
    """`batch` with `token` before each document's first slot (at most max_len slots a row)."""
    if batch.source_ids is not None:
        ids, mask, documents, _, _, _ = inserted(
            batch.source_ids, batch.source_padding_mask, batch.source_documents, token, pad_id, max_len
        )
        return replace(batch, source_ids=ids, source_padding_mask=mask, source_documents=documents)
    ids, mask, documents, targets, types, added = inserted(
        batch.ids, batch.padding_mask, batch.documents, token, pad_id, max_len, batch.targets, batch.token_types
    )
    prefix = batch.prefix_lengths
    if prefix is not None:
        # One token more in the prefix of each document that got one: (B,) or (B, D).
        prefix = prefix + (added if prefix.dim() == 2 else added[:, 0])
    changed = dict(ids=ids, padding_mask=mask, documents=documents, targets=targets, token_types=types)
    return replace(batch, prefix_lengths=prefix, **changed)


def inserted(ids, padding_mask, documents, token, pad_id, max_len, targets=None, token_types=None):
    """Rows with the token inserted: (ids, padding mask, documents, targets, token types, (B, D) 1
    where document d of row b got the token)."""
    n_documents = int(documents.max()) + 1 if documents is not None else 1
    added = torch.zeros(ids.shape[0], n_documents, dtype=torch.long)
    rows, row_documents, row_targets, row_types = [], [], [], []
    for b in range(ids.shape[0]):
        real = int(padding_mask[b].sum()) if padding_mask is not None else ids.shape[1]
        docs = documents[b, :real].tolist() if documents is not None else [0] * real
        room = (max_len - real) if max_len is not None else real + 1
        new_ids, new_docs, new_targets, new_types = [], [], [], []
        for i in range(real):
            starts = i == 0 or docs[i] != docs[i - 1]
            if starts and room > 0:
                room -= 1
                added[b, docs[i]] = 1
                new_ids.append(token)
                new_docs.append(docs[i])
                new_targets.append(IGNORE)
                new_types.append(0)
            new_ids.append(int(ids[b, i]))
            new_docs.append(docs[i])
            new_targets.append(int(targets[b, i]) if targets is not None else IGNORE)
            new_types.append(int(token_types[b, i]) if token_types is not None else 0)
        rows.append(new_ids)
        row_documents.append(new_docs)
        row_targets.append(new_targets)
        row_types.append(new_types)
    new_ids, new_mask = pad(rows, pad_id)
    width = new_ids.shape[1]
    new_documents = pad_documents(row_documents, width) if documents is not None else None
    new_targets = pad_targets(row_targets, width) if targets is not None else None
    new_types = pad(row_types, 0)[0] if token_types is not None else None
    return new_ids, new_mask, new_documents, new_targets, new_types, added
