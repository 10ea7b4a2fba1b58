"""`triform compare`: the pairs, the compute budget, the held-out tasks and the outputs."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import SPECIALS, tiny_config
from text_models import single_thread  # noqa: F401 (fixture)
from training_helpers import write_text

from triform.compare import Settings, compare
from triform.compare.budget import batch_compute, path_parameters
from triform.compare.heldout import (
    context_free_scores,
    masked_token,
    masked_windows,
    next_token,
    restore_pairs,
    restore_source,
)
from triform.compare.plan import entries
from triform.errors import TriformError
from triform.models import build_model
from triform.objectives import IGNORE, make_objective

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_allowed_pretraining_pair_is_compared_with_baselines():
    default = entries()
    assert len([e for e in default if e.objective != "none"]) == 10  # 5 objectives x 2 architectures
    assert {e.label for e in default if e.objective == "none"} == {
        "stack, no pretraining",
        "encoder-decoder, no pretraining",
    }
    every = entries("all")
    assert len(every) == 16 + 2 and all(e.objective != "seq2seq" for e in every)
    assert [e.label for e in entries("all", ["stack:mlm"])] == [
        "stack + mlm + bidirectional",
        "stack + mlm + causal",
        "stack + mlm + prefix",
        "stack + mlm + right-to-left",
        "stack, no pretraining",
    ]
    with pytest.raises(TriformError, match="stack:clm:prefix"):
        entries(pairs=["stack:clm:prefix"])  # refused by the compatibility table


def test_compute_counts_the_parameters_each_token_passes_through():
    stack = path_parameters(tiny_config("stack"))
    pair = path_parameters(tiny_config("encoder-decoder"))
    assert set(stack) == {"stack"} and set(pair) == {"encoder", "decoder"}
    assert pair["encoder"] == stack["stack"] < pair["decoder"]  # the decoder adds cross-attention
    objective = make_objective("span", SPECIALS, 100, arch="encoder-decoder")
    batch = objective.prepare([list(range(30, 50))], torch.Generator().manual_seed(0))
    expected = batch.source_ids.numel() * pair["encoder"] + batch.ids.numel() * pair["decoder"]
    assert batch_compute(batch, pair) == expected


def test_next_and_masked_tokens_are_scored_at_the_same_positions_on_both_architectures():
    windows = [list(range(30 + i, 50 + i)) for i in range(5)]
    scores = {}
    for arch in ("stack", "encoder-decoder"):
        model = build_model(tiny_config(arch))
        scores[arch] = (next_token(model, windows, SPECIALS), masked_token(model, windows, SPECIALS))
    assert scores["stack"][0]["tokens"] == scores["encoder-decoder"][0]["tokens"] == 5 * 10
    masked = masked_windows(windows, SPECIALS, 100)  # 15 % of 20 tokens chosen, about 80 % of them masked
    n_masks = sum(inputs.count(SPECIALS.mask) for inputs, _ in masked)
    assert 0 < n_masks < 5 * 3 and n_masks == sum(t != IGNORE for _, targets in masked for t in targets)
    assert scores["stack"][1]["tokens"] == scores["encoder-decoder"][1]["tokens"] == n_masks  # only those scored


def test_the_scores_that_need_no_model(tmp_path):
    from triform.explain import word_tokenizer
    from triform.vocab import SpecialTokens

    tokenizer = word_tokenizer("the dog ran home quickly The .")
    specials = SpecialTokens.from_tokenizer(tokenizer)
    the, dog = tokenizer.token_to_id("the"), tokenizer.token_to_id("dog")
    vocab_size = tokenizer.get_vocab_size()
    log_probs = torch.full((vocab_size,), 1e-9).index_fill_(0, torch.tensor([the, dog]), 0.5).log()
    windows = [[the] * 10 + [dog] * 10] * 4
    pairs = [(tokenizer.encode("the dog ran home").ids, tokenizer.encode("The dog ran home .").ids)]
    scores = context_free_scores(windows, pairs, tokenizer, specials, log_probs)
    # The second halves are all "dog"; the guess names the first of its two most likely tokens ("the").
    assert scores["next-token"]["tokens"] == 40 and scores["next-token"]["accuracy"] == 0.0
    assert scores["next-token"]["perplexity"] == pytest.approx(2.0)
    masked = scores["masked-token"]
    assert 0 < masked["tokens"] < 4 * 3 + 1 and masked["perplexity"] == pytest.approx(2.0)
    assert scores["restore"]["exact"] == 0.0 and 0 < scores["restore"]["chrf"] < 100  # copying is not restoring


def test_the_restore_task_hides_case_and_punctuation():
    assert restore_source('Mr. Smith, it\'s "late"!') == "mr smith it's late"
    assert restore_pairs(["The dog ran home quickly.", "too short", "no change needed here at all"]) == [
        ("the dog ran home quickly", "The dog ran home quickly.")
    ]


def small(tmp_path, **changes) -> Settings:
    values = dict(
        data=str(write_text(tmp_path / "corpus.txt", 400)),
        out=str(tmp_path / "compare"),
        budget=1e8,
        repeats=2,
        pairs=["encoder-decoder:span"],
        d_model=32,
        n_layers=1,
        max_len=32,
        vocab_size=300,
        batch_size=8,
        eval_windows=16,
        eval_pairs=16,
    )
    values.update(changes)
    return Settings(**values)


def test_compare_writes_the_table_the_runs_and_the_plot(tmp_path, single_thread):  # noqa: F811
    settings = small(tmp_path)
    outputs = compare(settings, show=lambda line: None)
    out = tmp_path / "compare"
    results = outputs["results"]
    assert len(results) == 2 * 2  # a pair and its architecture's baseline, 2 seeds each
    assert {r["seed"] for r in results} == {0, 1}
    pretrained = [r for r in results if r["objective"] != "none"]
    for r in pretrained:  # the same compute for every pair: steps x compute per step just reach the budget
        steps, per_step = r["pretraining"]["steps"], r["pretraining"]["compute_per_step"]
        assert (steps - 1) * per_step < settings.budget <= steps * per_step
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0].startswith("| architecture + objective + pattern | runs | next-token accuracy")
    assert any(line.startswith("| encoder-decoder + span + causal | 2 | ") and " ± " in line for line in lines)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {"next-token accuracy", "masked-token accuracy", "restore chrF"} <= set(rows[0])
    summary = list(csv.DictReader((out / "table.csv").open()))
    assert [r["runs"] for r in summary] == ["2"] * 2
    assert (out / "compare.png").read_bytes()[:8] == PNG
    assert all(0 <= float(r["masked-token accuracy"]) <= 1 for r in rows)

    again = compare(small(tmp_path, repeats=1), show=lambda line: None)  # continues: nothing trained again
    assert sorted(json.dumps(r, sort_keys=True) for r in again["results"]) == sorted(
        json.dumps(r, sort_keys=True) for r in results if r["seed"] == 0
    )
    with pytest.raises(TriformError, match="budget"):
        compare(small(tmp_path, budget=2e8), show=lambda line: None)


def test_compare_refuses_a_folder_that_is_not_its_own(tmp_path):
    (tmp_path / "compare").mkdir()
    (tmp_path / "compare" / "notes.txt").write_text("mine")
    with pytest.raises(TriformError, match="not a comparison"):
        compare(small(tmp_path), show=lambda line: None)
    assert (tmp_path / "compare" / "notes.txt").read_text() == "mine"
