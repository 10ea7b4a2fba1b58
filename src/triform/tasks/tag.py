"""Token classification (tagging): one label per word, read at the word's first sub-token, the
others ignored by the loss (Devlin et al. 2019 §5.3, on CoNLL-2003 NER). A sentence too long for the
model is cut into consecutive chunks of whole words, so every word gets a tag.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from triform.objectives.batch import IGNORE, pad_targets
from triform.tasks.base import Feature, Task, TaskBatch
from triform.tasks.data import Record
from triform.tasks.labels import Labels, list_cell
from triform.tasks.metrics import accuracy, span_f1


class Tag(Task):
    name = "tag"
    inputs = ("tokens",)
    targets = ("tags",)
    metric = "f1"
    pooled = False

    def __init__(self, framing, tokenizer, *, labels: list | None = None, lm_weight: float = 0.0):
        super().__init__(framing, tokenizer, lm_weight=lm_weight)
        framing.specials.require(("unk",), "tagging (for words the tokenizer drops)")
        self.labels = Labels(labels) if labels is not None else None

    def fit(self, records: list[Record]) -> None:
        self.labels = Labels.read(records, "tags", per_item=True)

    def n_outputs(self) -> int:
        if self.labels is None:
            raise RuntimeError("the tag set is unknown: call fit(records) first")
        return len(self.labels)

    def state(self) -> dict:
        return {**super().state(), "labels": self.labels.values}

    def words(self, record: Record) -> list[str]:
        words = list_cell(record, "tokens")
        if not all(isinstance(w, str) for w in words):
            raise record.error("'tokens' must be a list of words (texts)")
        return words

    def tags(self, record: Record, n_words: int) -> list[int]:
        tags = list_cell(record, "tags")
        if len(tags) != n_words:
            raise record.error(f"{len(tags)} tags for {n_words} tokens; expected one tag per token")
        return [self.labels.id(tag, record, "tag") for tag in tags]

    def pieces(self, words: list[str]) -> list[list[int]]:
        """Sub-token ids of each word, tokenized in context; a word that yields none becomes [UNK]."""
        if not words:
            return []
        encoding = self.tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        pieces: list[list[int]] = [[] for _ in words]
        for token, word in zip(encoding.ids, encoding.word_ids):
            if word is not None:
                pieces[word].append(token)
        return [p or [self.framing.specials.unk] for p in pieces]

    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        words = self.words(record)
        tags = self.tags(record, len(words)) if with_targets else None
        room = self.framing.room(1)
        features = []
        for first, last, chunk in chunks(self.pieces(words), room):
            row = self.framing.join([token for piece in chunk for token in piece])
            heads, position = [], row.starts[0]
            for piece in chunk:
                heads.append(position)
                position += len(piece)
            target = None
            if tags is not None:
                target = [IGNORE] * len(row.ids)
                for position, tag in zip(heads, tags[first:last]):
                    target[position] = tag
            features.append(Feature(index, [row], target, {"heads": heads}))
        return features

    def make_batch(self, features: list[Feature], generator=None) -> TaskBatch:
        batch = super().make_batch(features, generator)
        if features[0].target is not None:
            batch.targets = pad_targets([f.target for f in features], batch.ids.shape[1])
        return batch

    def task_loss(self, scores: Tensor, batch: TaskBatch) -> Tensor:
        return F.cross_entropy(scores.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)

    def split(self, scores: Tensor, batch: TaskBatch) -> list:
        return [row[f.info["heads"]].argmax(-1).tolist() for row, f in zip(scores, batch.features)]

    def decide(self, record: Record, outputs) -> dict:
        return {"tags": [self.labels[i] for _, chunk in outputs for i in chunk]}

    def metrics_of(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        references = [[self.labels[i] for i in self.tags(r, len(self.words(r)))] for r in records]
        predicted = [p["tags"] for p in predictions]
        flat_predicted = [t for sentence in predicted for t in sentence]
        flat_references = [t for sentence in references for t in sentence]
        return {**span_f1(predicted, references), "accuracy": accuracy(flat_predicted, flat_references)}


def chunks(pieces: list[list[int]], room: int):
    """(first word, last word, pieces) of consecutive runs of whole words fitting in `room` tokens;
    a single word longer than `room` keeps only its first `room` sub-tokens."""
    first, size = 0, 0
    for index, piece in enumerate(pieces):
        if size + len(piece) > room and index > first:
            yield first, index, [p[:room] for p in pieces[first:index]]
            first, size = index, 0
        size += len(piece)
    if first < len(pieces):
        yield first, len(pieces), [p[:room] for p in pieces[first:]]
