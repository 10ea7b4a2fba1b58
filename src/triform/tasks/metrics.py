"""Task metrics: accuracy and macro-F1, Pearson and Spearman correlation, SQuAD exact match and F1,
and span F1 over tagged entities (the CoNLL-2000 `conlleval` chunk rules, as seqeval applies them).

Plain functions of lists, so that a metric reads the same whether it scores a validation pass in
training or a file of predictions.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def accuracy(predictions: Sequence, references: Sequence) -> float:
    _same_length(predictions, references)
    return sum(p == r for p, r in zip(predictions, references)) / len(references) if references else 0.0


def macro_f1(predictions: Sequence[Hashable], references: Sequence[Hashable]) -> float:
    """Unweighted mean of per-label F1 over every label that occurs in either list (scikit-learn's
    `f1_score(average="macro")`); a label never predicted and never true cannot drag the mean."""
    _same_length(predictions, references)
    labels = set(predictions) | set(references)
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        true_positive = sum(p == label and r == label for p, r in zip(predictions, references))
        predicted = sum(p == label for p in predictions)
        actual = sum(r == label for r in references)
        scores.append(2 * true_positive / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(scores))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; 0.0 when either side is constant (the correlation is undefined there)."""
    _same_length(x, y)
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (as Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    result = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        result[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the ranks."""
    _same_length(x, y)
    return pearson(ranks(x), ranks(y))


# --- extractive QA (Rajpurkar et al. 2016; the official SQuAD v1.1/v2.0 evaluation) -------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer; "" stands for "no answer"."""
    return max(float(normalize_answer(prediction) == normalize_answer(answer)) for answer in _answers(answers))


def answer_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best token-overlap F1 against any answer; with "no answer" on either side, 1.0 only if both are."""
    return max(_token_f1(prediction, answer) for answer in _answers(answers))


def _token_f1(prediction: str, answer: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _answers(answers: Sequence[str] | str) -> list[str]:
    answers = [answers] if isinstance(answers, str) else list(answers)
    return answers or [""]  # SQuAD v2: an unanswerable question has no gold answers


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1, as percentages like the official script."""
    _same_length(predictions, answers)
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    return {
        "exact_match": 100.0 * float(np.mean([exact_match(p, a) for p, a in zip(predictions, answers)])),
        "f1": 100.0 * float(np.mean([answer_f1(p, a) for p, a in zip(predictions, answers)])),
    }


# --- tagging (Tjong Kim Sang & Buchholz 2000, conlleval) ----------------------------------------

# A chunk ends before the current tag when the previous tag and this one are, respectively:
_ENDS_AFTER = {"E", "S"}  # a chunk that was closed explicitly
_ENDS_BEFORE = {("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")}
# A chunk starts at the current tag when it is B or S, or when an I or E has no open chunk to extend.
_STARTS_AT = {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")}


def _split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") from "B-PER"; a tag with no prefix ("O", or a bare "PER") keeps its first letter."""
    prefix, _, kind = tag.partition("-")
    if not kind:
        return tag[:1], tag[1:] or "_"
    return prefix, kind


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks of one tag sequence as (type, first, last) word indices, in BIO, IOB1 or IOBES."""
    chunks, start = [], 0
    previous_tag, previous_type = "O", ""
    for index, tag in enumerate([*tags, "O"]):
        prefix, kind = _split_tag(tag)
        ends = (
            previous_tag in _ENDS_AFTER
            or (previous_tag, prefix) in _ENDS_BEFORE
            or (previous_tag not in ("O", ".") and previous_type != kind)
        )
        if ends:
            chunks.append((previous_type, start, index - 1))
        starts = (
            prefix in ("B", "S")
            or (previous_tag, prefix) in _STARTS_AT
            or (prefix not in ("O", ".") and previous_type != kind)
        )
        if starts:
            start = index
        previous_tag, previous_type = prefix, kind
    return chunks


def span_f1(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 of exactly matching chunks (type and boundaries)."""
    _same_length(predictions, references)
    predicted, gold = set(), set()
    for sentence, (p, r) in enumerate(zip(predictions, references)):
        if len(p) != len(r):
            raise ValueError(f"sentence {sentence}: {len(p)} predicted tags for {len(r)} reference tags")
        predicted.update((sentence, *chunk) for chunk in entities(p))
        gold.update((sentence, *chunk) for chunk in entities(r))
    correct = len(predicted & gold)
    precision = correct / len(predicted) if predicted else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions for {len(b)} references")
