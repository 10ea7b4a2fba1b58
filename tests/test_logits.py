"""Logit processors, the sampler and the length penalty, on small exact examples."""

import math

import pytest
import torch
from conftest import SPECIALS, tiny_config
from text_models import single_thread  # noqa: F401  (a fixture)

from triform.generate import GenerationConfig, generate_ids, length_penalty, resolve_layout
from triform.generate.logits import (
    NgramBlocker,
    apply_temperature,
    min_p_filter,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from triform.generate.search import sample
from triform.models import StackModel, build_model

pytestmark = pytest.mark.usefixtures("single_thread")

PROBABILITIES = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = PROBABILITIES.log()


def kept(logits):
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def test_top_k_keeps_the_k_best():
    assert kept(top_k_filter(LOGITS, 2)) == [0, 1]
    assert kept(top_k_filter(LOGITS, 0)) == [0, 1, 2, 3]


@pytest.mark.parametrize("p, expected", [(0.8, [0, 1]), (0.81, [0, 1, 2]), (0.01, [0]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    assert kept(top_p_filter(LOGITS, p)) == expected


def test_top_p_works_on_unsorted_rows():
    shuffled = LOGITS[:, [2, 0, 3, 1]]
    assert kept(top_p_filter(shuffled, 0.8)) == [1, 3]


def test_min_p_scales_the_threshold_with_the_best_token():
    assert kept(min_p_filter(LOGITS, 0.2)) == [0, 1, 2]  # threshold 0.2 * 0.5 = 0.1
    assert kept(min_p_filter(LOGITS, 0.7)) == [0]


def test_temperature_divides():
    torch.testing.assert_close(apply_temperature(LOGITS, 0.5), LOGITS * 2)


def test_repetition_penalty_makes_seen_tokens_less_likely_whatever_their_sign():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    torch.testing.assert_close(repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0]]))


def test_no_repeat_ngram_forbids_completing_a_seen_ngram():
    assert NgramBlocker(3, [5, 6, 7, 5, 6]).banned() == [7]
    assert NgramBlocker(2, [5, 6, 7, 5, 8, 5]).banned() == [6, 8]
    assert NgramBlocker(3, [5, 6]).banned() == []


def test_sampling_draws_in_proportion_to_the_probabilities():
    n = 6000
    generators = [torch.Generator().manual_seed(i) for i in range(n)]
    draws = sample(LOGITS.expand(n, -1), generators)
    frequencies = torch.bincount(draws, minlength=4).float() / n
    bound = 4 * (PROBABILITIES[0] * (1 - PROBABILITIES[0]) / n).sqrt()  # 4 standard errors
    assert ((frequencies - PROBABILITIES[0]).abs() < bound).all(), frequencies


class BigramModel(StackModel):
    """A stack whose next-token log-probabilities depend only on the last token: a constructed
    language model whose sequences have known probabilities."""

    def __init__(self, table):
        real = build_model(tiny_config())
        super().__init__(real.config, real.stack, real.head)
        self.table = table

    def forward(self, ids, pattern="causal", *, logits_at=None, cache=None, **_):
        logits = self.table[ids]  # (B, T, V)
        return logits[logits_at] if logits_at is not None else logits


def bigram_table(transitions: dict[int, dict[int, float]]):
    """Log-probabilities of the next token given the last; every other token ends the sequence."""
    table = torch.full((100, 100), float("-inf"))
    table[:, SPECIALS.eos] = 0.0
    for token, nexts in transitions.items():
        table[token] = float("-inf")
        for following, probability in nexts.items():
            table[token, following] = math.log(probability)
    return table


A, B, C, EOS = 30, 31, 32, SPECIALS.eos


def test_length_penalty_changes_the_ranking_as_the_formula_says():
    table = bigram_table({SPECIALS.bos: {EOS: 0.55, A: 0.45}, A: {B: 0.9, EOS: 0.1}})
    log_p = {(): math.log(0.55), (A,): math.log(0.45 * 0.1), (A, B): math.log(0.45 * 0.9)}
    assert length_penalty(3, 2.0) == pytest.approx(((5 + 3) / 6) ** 2)

    model = BigramModel(table).eval()
    layout = resolve_layout("stack", SPECIALS)
    rankings = {}
    for alpha in (0.0, 2.0):
        config = GenerationConfig(max_new_tokens=5, num_beams=3, num_return_sequences=3, length_penalty=alpha)
        best = generate_ids(model, layout, [[]], config)
        expected = {tokens: lp / length_penalty(len(tokens) + 1, alpha) for tokens, lp in log_p.items()}
        assert [tuple(r.tokens) for r in best] == sorted(expected, key=expected.get, reverse=True)
        assert [r.score for r in best] == pytest.approx(sorted(expected.values(), reverse=True), abs=1e-5)
        rankings[alpha] = [tuple(r.tokens) for r in best]
    assert rankings[0.0][0] == () and rankings[2.0][0] == (A, B)  # the longer sequence wins with alpha = 2


def test_without_early_stopping_search_goes_on_while_a_running_beam_can_still_win():
    # "" ends first (score -0.69), then "c" (-2.2): two finished hypotheses for two beams. The running
    # beam "a b" can still reach log(0.405) / lp(3) = -0.51 with alpha = 2, and does.
    table = bigram_table({SPECIALS.bos: {EOS: 0.5, A: 0.45, C: 0.05}, A: {B: 0.9, EOS: 0.1}})
    model, layout = BigramModel(table).eval(), resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=5, num_beams=2, num_return_sequences=2, length_penalty=2.0)
    assert [r.tokens for r in generate_ids(model, layout, [[]], config)] == [[], [C]]
    patient = generate_ids(model, layout, [[]], config.replace(early_stopping=False))
    assert [r.tokens for r in patient] == [[A, B], []]
    assert patient[0].score == pytest.approx(math.log(0.405) / length_penalty(3, 2.0))
