"""Task metrics against reference implementations (scikit-learn, SciPy, seqeval) and the SQuAD
script's definitions."""

import random

import pytest
import scipy.stats
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from sklearn.metrics import f1_score as sklearn_f1

from triform.tasks.metrics import (
    accuracy,
    answer_f1,
    entities,
    exact_match,
    macro_f1,
    normalize_answer,
    pearson,
    span_f1,
    spearman,
    squad_scores,
)


def test_accuracy_and_macro_f1_match_scikit_learn():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 30)
        labels = rng.sample(["a", "b", "c", "d"], rng.randint(1, 4))
        gold = [rng.choice(labels) for _ in range(n)]
        predicted = [rng.choice(labels + ["e"]) for _ in range(n)]
        assert macro_f1(predicted, gold) == pytest.approx(sklearn_f1(gold, predicted, average="macro", zero_division=0))
        assert accuracy(predicted, gold) == pytest.approx(sum(p == g for p, g in zip(predicted, gold)) / n)


def test_correlations_match_scipy_with_ties():
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(3, 40)
        x = [rng.choice([0.0, 0.5, 1.0, 2.0, rng.random()]) for _ in range(n)]
        y = [v * rng.uniform(-1, 2) + rng.gauss(0, 0.5) for v in x]
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-9)
            assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-9)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    assert exact_match("the Eiffel Tower", ["Eiffel tower.", "Paris"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel tower"]) == 0.0
    # prediction "eiffel" vs gold "eiffel tower": precision 1, recall 1/2 -> F1 2/3
    assert answer_f1("Eiffel", ["Eiffel tower"]) == pytest.approx(2 / 3)
    assert answer_f1("in Paris", ["Eiffel tower", "Paris"]) == pytest.approx(2 / 3)
    # No answer: only an empty prediction scores (SQuAD v2.0).
    assert exact_match("", []) == 1.0 and answer_f1("", [""]) == 1.0
    assert answer_f1("Paris", []) == 0.0 and answer_f1("", ["Paris"]) == 0.0
    assert squad_scores(["Paris", ""], [["Paris"], []]) == {"exact_match": 100.0, "f1": 100.0}


def test_entities_follow_conlleval():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert entities(["I-PER", "I-PER", "B-PER"]) == [("PER", 0, 1), ("PER", 2, 2)]  # IOB1: I opens a chunk
    assert entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]  # a type change splits
    assert entities(["S-PER", "B-LOC", "E-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]  # IOBES


def test_span_f1_matches_seqeval_on_random_tag_sequences():
    rng = random.Random(2)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-ORG", "I-ORG"]
    for _ in range(200):
        gold, predicted = [], []
        for _ in range(rng.randint(1, 4)):
            n = rng.randint(1, 8)
            gold.append([rng.choice(tags) for _ in range(n)])
            predicted.append([g if rng.random() < 0.6 else rng.choice(tags) for g in gold[-1]])
        ours = span_f1(predicted, gold)
        assert ours["f1"] == pytest.approx(seqeval_f1(gold, predicted, zero_division=0))
        assert ours["precision"] == pytest.approx(seqeval_precision(gold, predicted, zero_division=0))
        assert ours["recall"] == pytest.approx(seqeval_recall(gold, predicted, zero_division=0))


def test_mismatched_lengths_are_errors():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="sentence 0: 1 predicted tags for 2"):
        span_f1([["O"]], [["O", "O"]])
