"""Sentence embeddings fine-tuned contrastively, and scored by how well their cosine similarity ranks
scored pairs.

Training records are pairs: an `anchor` text and a `positive` one that means the same (a paraphrase,
a question and its answer), optionally with a hard `negative`. Each anchor's vector should be nearer
its own positive than every other candidate of the batch: the other anchors' positives, and every
hard negative of the batch. The loss is cross-entropy over the cosine similarities of an anchor with
all candidates, times a scale of 20: sentence-transformers' MultipleNegativesRankingLoss, the
in-batch softmax of Henderson et al. 2017 §4.4 and the InfoNCE loss of van den Oord et al. 2018 §2.3
(its scale is 1 / temperature). More examples per batch give more negatives per anchor: under
`--train.grad_accum` or several processes the negatives are those of one micro-batch on one process.

Validation and prediction records are scored pairs (`text_a`, `text_b`, `score`), as STS-B: the
prediction is the cosine similarity of the two vectors, and the metric is Spearman's rank
correlation with the gold scores (Reimers & Gurevych 2019 §4.1; Pearson's r beside it). Scored pairs
have no positive to contrast, so validation reports these correlations and no loss.

Vectors are pooled from the body's final hidden states as tasks/embed.py pools them (the mean over
real tokens, the first token or the last one); the model trained is the body itself, saved with its
pooling, so that the folder embeds with `triform embed` and `Embedder.load` as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.models.modes import evaluation
from triform.objectives.batch import pad
from triform.tasks.base import Feature, Task, TaskBatch, Validation
from triform.tasks.data import Record, read_records
from triform.tasks.embed import Embedder, EmbeddingModel, Pooling
from triform.tasks.metrics import pearson, spearman

# sentence-transformers' MultipleNegativesRankingLoss default: cosine similarity times 20.
SCALE = 20.0


@dataclass(frozen=True)
class EmbedOptions:
    pooling: Literal["mean", "cls", "last"] | None = None  # None: the body's own, else the default for its reading
    normalize: bool | None = None  # L2-normalise the vectors `triform embed` writes; None: the body's own, else no
    scale: float = SCALE  # cosine similarities times this, before the softmax over the batch (1 / temperature)


class Embed(Task):
    name = "embed"
    Options = EmbedOptions
    inputs = ("text_a", "text_b")
    targets = ("score",)
    training = ("anchor", "positive")
    optional = ("negative",)
    metric = "spearman"

    def __init__(
        self,
        framing,
        tokenizer,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        scale: float = SCALE,
        lm_weight: float = 0.0,
    ):
        if lm_weight:
            raise ValueError("lm_weight: the embed task trains the body's vectors; the auxiliary loss is for heads")
        super().__init__(framing, tokenizer)
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale}")
        self.scale, self.asked = scale, (pooling, normalize)
        default = Pooling.default_for(framing.arch, framing.pattern)
        self.pooling = Pooling(pooling or default.how, bool(normalize))

    def start_from(self, extra: dict) -> None:
        """Keep the pooling the body was saved with (an imported sentence-transformers model's, or a
        previous fine-tuning's) where the options leave it unset."""
        saved = extra.get("pooling") or {}
        pooling, normalize = self.asked
        how = pooling or saved.get("how", self.pooling.how)
        self.pooling = Pooling(how, normalize if normalize is not None else bool(saved.get("normalize", False)))

    def state(self) -> dict:
        pooling = {"pooling": self.pooling.how, "normalize": self.pooling.normalize}
        return {**super().state(), **pooling, "scale": self.scale}

    def body_extra(self) -> dict:
        """How `triform embed` and `Embedder.load` read the saved body and pool its states: as trained."""
        pooling = {"how": self.pooling.how, "normalize": self.pooling.normalize, "pattern": self.framing.pattern}
        return {"pooling": pooling}

    def build_model(self, body: nn.Module) -> nn.Module:
        return EmbeddingModel(body, self.framing, self.pooling)

    # --- records -> features -------------------------------------------------------------------
    def row(self, record: Record, column: str):
        return self.framing.join(self.tokens(self.text(record, column)))

    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        """A scored pair: its two texts, one row each, and its gold score."""
        rows = [self.row(record, "text_a"), self.row(record, "text_b")]
        return [Feature(index, rows, self.target(record) if with_targets else None)]

    def target(self, record: Record) -> float:
        value = record.require("score")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise record.error(f"'score' must be a number, got {value!r}") from None

    def training_features(self, records: list[Record]) -> list[Feature]:
        """Anchor, positive and, when the record has one, its hard negative."""
        features = []
        for index, record in enumerate(records):
            columns = ["anchor", "positive"] + (["negative"] if record.get("negative") is not None else [])
            features.append(Feature(index, [self.row(record, c) for c in columns], None, {"contrast": True}))
        return features

    def make_batch(self, features: list[Feature], generator=None) -> TaskBatch:
        if not features[0].info.get("contrast"):
            batch = super().make_batch(features, generator)  # a, b of each pair in turn
            if features[0].target is not None:
                batch.targets = torch.tensor([f.target for f in features], dtype=torch.float)
            return batch
        # Anchors, then the candidates: every positive (anchor i's at i), then every hard negative.
        ordered = [f.rows[0] for f in features] + [f.rows[1] for f in features]
        ordered += [f.rows[2] for f in features if len(f.rows) > 2]
        ids, padding_mask = pad([row.ids for row in ordered], self.framing.specials.pad)
        batch = TaskBatch(ids, padding_mask, torch.zeros_like(ids), features)
        batch.targets = torch.arange(len(features))  # anchor i's positive is candidate i
        return batch

    # --- loss and prediction ----------------------------------------------------------------
    def task_loss(self, vectors: Tensor, batch: TaskBatch) -> Tensor:
        if not batch.features[0].info.get("contrast"):
            raise ValueError("the embed task's loss needs anchors and positives; scored pairs are evaluated")
        n_anchors = len(batch.features)
        anchors = F.normalize(vectors[:n_anchors].float(), dim=-1)  # (B, d_model)
        candidates = F.normalize(vectors[n_anchors:].float(), dim=-1)  # (B + negatives, d_model)
        return F.cross_entropy(self.scale * anchors @ candidates.T, batch.targets)  # (B, B + negatives) scores

    def split(self, vectors: Tensor, batch: TaskBatch) -> list:
        """The cosine similarity of each pair's two vectors (rows a, b of each pair in turn)."""
        pairs = vectors.view(-1, 2, vectors.shape[-1])  # (pairs, 2, d_model)
        return list(F.cosine_similarity(pairs[:, 0], pairs[:, 1], dim=-1))

    def decide(self, record: Record, outputs) -> dict:
        ((_, similarity),) = outputs
        return {"score": float(similarity)}

    def metrics_of(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        predicted, gold = [p["score"] for p in predictions], [self.target(r) for r in records]
        return {"spearman": spearman(predicted, gold), "pearson": pearson(predicted, gold)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Validation, context) -> dict:
        """Spearman and Pearson correlation of cosine similarity with the gold scores, on every pair."""
        with evaluation(model), context.autocast():
            return self.metrics_of(self.predict(model, data.records, batch_size=context.batch_size), data.records)


def similarity_scores(
    directory, data, *, columns: dict | None = None, batch_size: int = 32, device: str = "cpu"
) -> dict:
    """Spearman and Pearson correlation of cosine similarity with the gold scores of a file of scored
    pairs, for any model folder, read and pooled as `Embedder.load` reads it: what a body embeds
    before fine-tuning, after it, or as imported (`triform eval --task embed`)."""
    embedder = Embedder.load(directory, device=device)
    pooling = embedder.pooling
    task = Embed(embedder.framing, embedder.tokenizer, pooling=pooling.how, normalize=pooling.normalize)
    records = read_records(data, task.inputs + task.targets, task.check_columns(columns))
    task.check_targets(records)  # a score that is not a number names its line before any work
    predictions = task.predict(task.build_model(embedder.body), records, batch_size=batch_size)
    return {"model": str(directory), "task": "embed", "pairs": len(records), **task.metrics_of(predictions, records)}
