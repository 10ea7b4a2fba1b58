"""Extractive question answering: the answer is a span of the context, found by a start and an end
score per token (Devlin et al. 2019 §4.2). A context longer than the model's window is read in
overlapping windows (`stride` tokens shared by neighbours, as BERT's run_squad doc_stride); the best
valid span over all windows wins. Questions without an answer (SQuAD v2.0, §4.3) point at the
summary token instead: [CLS] on a bidirectional stack, the last real token otherwise. When the
training data has such questions, a prediction is "no answer" where that score beats the best span.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from triform.tasks.base import Feature, Task, TaskBatch
from triform.tasks.data import Record
from triform.tasks.metrics import squad_scores


@dataclass(frozen=True)
class QAOptions:
    stride: int | None = None  # tokens shared by neighbouring windows of a long context (None: max_len / 4)
    max_answer_tokens: int = 30


class ExtractiveQA(Task):
    name = "qa"
    Options = QAOptions
    inputs = ("question", "context")
    targets = ("answer",)
    optional = ("answer_start",)
    metric = "f1"
    pooled = False

    def __init__(
        self,
        framing,
        tokenizer,
        *,
        stride: int | None = None,
        max_answer_tokens: int = 30,
        no_answer: bool = False,
        lm_weight: float = 0.0,
    ):
        super().__init__(framing, tokenizer, lm_weight=lm_weight)
        self.max_question_tokens = framing.max_len // 4  # BERT's run_squad: 64 of 384
        self.stride = framing.max_len // 4 if stride is None else stride
        largest = framing.room(2) - self.max_question_tokens - 1
        if not 0 <= self.stride <= largest:
            raise ValueError(
                f"stride: expected 0 to {largest} tokens shared by neighbouring windows, got {self.stride}"
            )
        if max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens: expected 1 or more, got {max_answer_tokens}")
        self.max_answer_tokens = max_answer_tokens
        self.no_answer = no_answer

    def n_outputs(self) -> int:
        return 2  # start and end scores

    def fit(self, records: list[Record]) -> None:
        self.no_answer = any(not self.answers(record) for record in records)

    def state(self) -> dict:
        extra = {"stride": self.stride, "max_answer_tokens": self.max_answer_tokens, "no_answer": self.no_answer}
        return {**super().state(), **extra}

    # --- records --------------------------------------------------------------------------------
    def answers(self, record: Record) -> list[tuple[str, int]]:
        """(text, character offset) of each gold answer; [] for a question with no answer. An
        answer is null, "", or a list of texts (any of them is right; the first is trained on)."""
        if "answer" not in record.values:
            raise record.error(f"no 'answer' column; found {sorted(record.values)}")
        context, value = self.text(record, "context"), record.values["answer"]
        texts = [] if value is None or value == "" else value if isinstance(value, list) else [value]
        if not all(isinstance(t, str) and t for t in texts):
            raise record.error(f"'answer' must be a text, a list of texts, or empty for no answer; got {value!r}")
        starts = record.get("answer_start")
        starts = [None] * len(texts) if starts in (None, "") else starts if isinstance(starts, list) else [starts]
        if len(starts) != len(texts):
            raise record.error(f"{len(starts)} answer_start value(s) for {len(texts)} answer(s)")
        found = []
        for text, start in zip(texts, starts):
            if start is None:
                start = context.find(text)
                if start < 0:
                    raise record.error(f"answer {text!r} is not in its context")
            else:
                try:
                    start = int(start)
                except (TypeError, ValueError):
                    raise record.error(f"'answer_start' must be a character offset, got {start!r}") from None
                if context[start : start + len(text)] != text:
                    seen = context[max(start, 0) : max(start, 0) + len(text)]
                    raise record.error(
                        f"answer {text!r} is not at answer_start {start} of its context (found {seen!r})"
                    )
            found.append((text, start))
        return found

    def has_targets(self, record: Record) -> bool:
        return "answer" in record.values  # a null answer is an answer: "none"

    # --- features ---------------------------------------------------------------------------------
    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        question = self.tokens(self.text(record, "question"))[: self.max_question_tokens]
        context = self.tokenizer.encode(self.text(record, "context"), add_special_tokens=False)
        offsets = context.offsets
        answer = None
        if with_targets and (gold := self.answers(record)):
            answer = token_span(offsets, gold[0][1], gold[0][1] + len(gold[0][0]))
            if answer is None:
                raise record.error(f"answer {gold[0][0]!r} covers no token of its context")
        room = self.framing.room(2) - len(question)
        features = []
        for first, last in windows(len(offsets), room, self.stride):
            row = self.framing.join(question, context.ids[first:last])
            start = row.starts[1]
            null = 0 if self.framing.pools_first else len(row.ids) - 1
            target = None
            if with_targets:
                inside = answer is not None and first <= answer[0] and answer[1] < last
                target = (answer[0] - first + start, answer[1] - first + start) if inside else (null, null)
            info = {"offsets": offsets[first:last], "context_start": start, "null": null}
            features.append(Feature(index, [row], target, info))
        return features

    def make_batch(self, features: list[Feature], generator=None) -> TaskBatch:
        batch = super().make_batch(features, generator)
        if features[0].target is not None:
            batch.targets = tuple(torch.tensor(column) for column in zip(*(f.target for f in features)))
        return batch

    def allowed(self, batch: TaskBatch) -> Tensor:
        """(N, T) True at the positions an answer may start or end: the context and the null slot."""
        allowed = torch.zeros(batch.ids.shape, dtype=torch.bool)
        for row, feature in enumerate(batch.features):
            start = feature.info["context_start"]
            allowed[row, start : start + len(feature.info["offsets"])] = True
            allowed[row, feature.info["null"]] = True
        return allowed.to(batch.ids.device)

    def task_loss(self, scores: Tensor, batch: TaskBatch) -> Tensor:
        scores = scores.float().masked_fill(~self.allowed(batch)[..., None], float("-inf"))  # (N, T, 2)
        starts, ends = batch.targets
        return (F.cross_entropy(scores[..., 0], starts) + F.cross_entropy(scores[..., 1], ends)) / 2

    def split(self, scores: Tensor, batch: TaskBatch) -> list:
        return [row[: len(f.rows[0].ids)] for row, f in zip(scores, batch.features)]

    # --- decisions --------------------------------------------------------------------------------
    def decide(self, record: Record, outputs) -> dict:
        best_score, best_span, null_score = float("-inf"), None, float("inf")
        for feature, scores in outputs:
            null = feature.info["null"]
            null_score = min(null_score, float(scores[null, 0] + scores[null, 1]))
            start, offsets = feature.info["context_start"], feature.info["offsets"]
            found = best_span_of(scores[start : start + len(offsets)], self.max_answer_tokens)
            if found is not None and found[0] > best_score:
                best_score, best_span = found[0], (offsets[found[1]][0], offsets[found[2]][1])
        if best_span is None or (self.no_answer and null_score > best_score):
            return {"answer": "", "answer_start": None, "score": null_score if outputs else 0.0}
        context = record.values["context"]
        return {"answer": context[best_span[0] : best_span[1]], "answer_start": best_span[0], "score": best_score}

    def metrics_of(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        golds = [[text for text, _ in self.answers(record)] for record in records]
        return squad_scores([p["answer"] for p in predictions], golds)


def windows(n_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[first, last) token ranges of width `room` covering n_tokens, neighbours sharing `stride`."""
    step = max(1, room - stride)
    spans, first = [], 0
    while True:
        spans.append((first, min(first + room, n_tokens)))
        if first + room >= n_tokens:
            return spans
        first += step


def token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """First and last token overlapping the characters [start, end), or None if no token does."""
    inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    return (inside[0], inside[-1]) if inside else None


def best_span_of(scores: Tensor, max_tokens: int) -> tuple[float, int, int] | None:
    """(score, first, last) of the best span with first <= last < first + max_tokens; scores (n, 2)."""
    n = scores.shape[0]
    if n == 0:
        return None
    total = scores[:, 0, None] + scores[None, :, 1]  # (n, n): start i, end j
    index = torch.arange(n)
    valid = (index[None, :] >= index[:, None]) & (index[None, :] - index[:, None] < max_tokens)
    flat = total.masked_fill(~valid, float("-inf")).argmax()
    first, last = divmod(int(flat), n)
    return float(total[first, last]), first, last
