"""What an objective hands to the model and the loss: inputs, attention pattern and targets."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

IGNORE = -100  # target value at positions that carry no loss (F.cross_entropy's ignore_index)


@dataclass
class Batch:
    ids: Tensor  # (B, T) input of a stack, or the decoder input of an encoder-decoder
    targets: Tensor  # (B, T) token to predict at each position, IGNORE where nothing is predicted
    pattern: str  # self-attention pattern of the stack or the decoder
    padding_mask: Tensor | None = None  # (B, T) True at real tokens; None when nothing is padded
    prefix_lengths: Tensor | None = None  # (B,) slots seen bidirectionally, for the prefix pattern; (B, D) packed
    token_types: Tensor | None = None  # (B, T) segment ids
    source_ids: Tensor | None = None  # (B, S) encoder input of an encoder-decoder
    source_padding_mask: Tensor | None = None  # (B, S)
    sparse_logits: bool = False  # compute logits only where targets are set
    # Rows that pack several documents: the document of each slot (0, 1, ... along a row), so that
    # each is attended and placed as if alone (nn/masks.py). None: each row is one text.
    documents: Tensor | None = None  # (B, T)
    source_documents: Tensor | None = None  # (B, S), the source's, read by target document d alone
    # The part of a mixture that made the batch (objectives/mixture.py): its loss is logged apart.
    part: str | None = None

    @property
    def logits_at(self) -> Tensor | None:
        return self.targets != IGNORE if self.sparse_logits else None

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    @property
    def n_inputs(self) -> int:
        """Input tokens, what tokens per second count: the real tokens of a stack or a decoder, and
        every slot of an encoder's source."""
        count = int(self.ids.numel() if self.padding_mask is None else self.padding_mask.sum())
        return count + (int(self.source_ids.numel()) if self.source_ids is not None else 0)

    def model_inputs(self) -> dict:
        """Keyword arguments for `model(**batch.model_inputs())`, for either architecture."""
        inputs = {
            "ids": self.ids,
            "pattern": self.pattern,
            "padding_mask": self.padding_mask,
            "documents": self.documents,
            "logits_at": self.logits_at,
        }
        if self.source_ids is not None:
            inputs.update(
                source_ids=self.source_ids,
                source_padding_mask=self.source_padding_mask,
                source_documents=self.source_documents,
            )
        else:
            inputs.update(prefix_lengths=self.prefix_lengths, token_types=self.token_types)
        return {key: value for key, value in inputs.items() if value is not None}

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in moved.items()}
        return replace(self, **moved)


def rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows start:stop of every per-example tensor of `batch`."""
    sliced = {
        f.name: getattr(batch, f.name)[start:stop] for f in fields(batch) if isinstance(getattr(batch, f.name), Tensor)
    }
    return replace(batch, **sliced)


def pad(sequences: list[list[int]], pad_id: int, side: str = "right") -> tuple[Tensor, Tensor | None]:
    """Pad to a rectangle: (B, T) ids and a (B, T) real-token mask, or None when nothing was padded."""
    length = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        span = slice(0, len(sequence)) if side == "right" else slice(length - len(sequence), length)
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = True
    return ids, (None if bool(mask.all()) else mask)


def pad_documents(rows: list[list[int]], length: int) -> Tensor | None:
    """(B, T) document of each slot, padding slots in the row's last document; None when every row
    is one document, so that attention needs no document mask at all."""
    if all(not row or row[-1] == row[0] for row in rows):
        return None
    documents = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        documents[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        documents[index, len(row) :] = row[-1] if row else 0
    return documents


def pad_targets(sequences: list[list[int]], length: int) -> Tensor:
    targets = torch.full((len(sequences), length), IGNORE, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        targets[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return targets
