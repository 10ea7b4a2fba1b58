"""`triform compare`: the pairs, the compute budget, the held-out tasks and the outputs."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from conftest import SPECIALS, tiny_config
from text_models import single_thread  # noqa: F401 (fixture)
from training_helpers import sentences, write_text

from triform.compare import Settings, compare
from triform.compare.budget import path_parameters
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
    assert len([e for e in default if e.objective != "none"]) == 14  # 5 x 2 architectures, electra, unilm, ul2 x 2
    assert {e.label for e in default if e.objective == "none"} == {
        "stack, no pretraining",
        "encoder-decoder, no pretraining",
    }
    every = entries("all")  # 15 triples, mlm right-to-left, electra, ul2 on both, unilm, 2 baselines
    assert len(every) == 22 and all(e.objective != "seq2seq" for e in every)
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
    assert objective.compute(batch, pair) == expected


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


def test_a_pair_may_give_its_objective_options_which_reach_the_recipe(tmp_path):
    from triform.train.spec import RunSpec, resolved_run

    (entry,) = entries(pairs=["stack:mlm(rate=0.3,whole_word=true):causal"], baseline=False)
    assert entry.label == "stack + mlm(rate=0.3,whole_word=true) + causal"
    assert entry.key == "stack-mlm-rate-0.3-whole_word-true-causal" and dict(entry.options)["whole_word"] is True
    spec = RunSpec("stack", "mlm", "causal", str(write_text(tmp_path / "t.txt", 10)), None, "", 1, 4)
    recipe = resolved_run(dataclasses.replace(spec, options=dict(entry.options)), tmp_path).recipe
    assert recipe.options.rate == 0.3 and recipe.options.whole_word is True
    smoothed = resolved_run(dataclasses.replace(spec, options={"label_smoothing": 0.1}), tmp_path).recipe
    assert smoothed.label_smoothing == 0.1  # an option the configuration holds at its top
    with pytest.raises(TriformError, match="no option 'rat'"):
        resolved_run(dataclasses.replace(spec, options={"rat": 0.3}), tmp_path)
    with pytest.raises(TriformError, match="no option 'rat'"):
        entries(pairs=["stack:mlm(rat=0.3)"])
    with pytest.raises(TriformError, match="stack:mlm\\(0.3\\)"):
        entries(pairs=["stack:mlm(0.3)"])
    with pytest.raises(TriformError, match="no objective that pretrains"):
        entries(pairs=["stack:seq2seq"])


def test_every_registered_objective_becomes_a_row_without_compare_naming_it(monkeypatch):
    """An objective that lands in the registry and the compatibility table is compared, as is
    every other: nothing in compare/ lists the objectives."""
    from triform.objectives import compat, registry
    from triform.objectives.clm import CausalLM

    class Shifted(CausalLM):
        name = "shifted"

    monkeypatch.setitem(registry.OBJECTIVE_CLASSES, "shifted", Shifted)
    monkeypatch.setattr(compat, "OBJECTIVES", compat.OBJECTIVES + ("shifted",))
    monkeypatch.setitem(compat.ALLOWED, ("stack", "shifted"), {"causal": "a test objective"})
    monkeypatch.setitem(compat.ALLOWED, ("encoder-decoder", "shifted"), {"causal": "a test objective"})
    assert {"stack + shifted + causal", "encoder-decoder + shifted + causal"} <= {e.label for e in entries()}
    assert [e.label for e in entries(pairs=["stack:shifted"], baseline=False)] == ["stack + shifted + causal"]


def test_an_objective_that_decides_its_own_patterns_is_asked_and_takes_mappings(monkeypatch):
    """An objective outside the compatibility table that answers `pattern_on` (as a mixture checks
    its parts) is compared where it accepts the architecture, with its options as given."""
    from dataclasses import dataclass

    from triform.errors import IncompatiblePair
    from triform.objectives import registry
    from triform.objectives.clm import CausalLM

    @dataclass(frozen=True)
    class PartsOptions:
        parts: dict | None = None

    class Parts(CausalLM):
        name = "parts"
        Options = PartsOptions
        asked = []

        @classmethod
        def pattern_on(cls, arch, pattern, options):
            cls.asked.append((arch, pattern, options.parts))
            if arch != "stack":
                raise IncompatiblePair(f"parts: not on an {arch}")
            return pattern or "causal"

    monkeypatch.setitem(registry.OBJECTIVE_CLASSES, "parts", Parts)
    assert "stack + parts + causal" in [e.label for e in entries()]
    assert not any(e.arch == "encoder-decoder" and e.objective == "parts" for e in entries())
    (entry,) = entries(pairs=["stack:parts(parts={clm: 0.5, mlm@causal: 0.5})"], baseline=False)
    assert dict(entry.options) == {"parts": {"clm": 0.5, "mlm@causal": 0.5}} and entry.pattern == "causal"
    assert ("stack", None, {"clm": 0.5, "mlm@causal": 0.5}) in Parts.asked
    with pytest.raises(TriformError, match="not on an encoder-decoder"):
        entries(pairs=["encoder-decoder:parts"])


def test_finetune_fractions_per_task_and_their_errors():
    from triform.compare.fractions import finetune_fractions

    tasks = ["next-token", "masked-token", "restore", "genre"]
    assert finetune_fractions(0.25, tasks) == dict.fromkeys(tasks, 0.25)
    assert finetune_fractions("0.5", tasks) == dict.fromkeys(tasks, 0.5)
    assert finetune_fractions("restore=6,next=0.25,masked=0.25,genre=0.5", tasks) == {
        "next-token": 0.25,
        "masked-token": 0.25,
        "restore": 6.0,
        "genre": 0.5,
    }
    assert finetune_fractions("0.1,restore=6", tasks)["masked-token"] == 0.1  # a bare number: the rest
    assert finetune_fractions('{"restore": 6}', tasks)["next-token"] == 0.25  # unnamed: the default
    assert finetune_fractions({"masked-token": 2}, tasks)["masked-token"] == 2.0
    for given, named in (
        ("restor=6", "'restor' names no held-out task"),
        ("restore=0", "restore=0: expected a fraction"),
        ("genre=lots", "genre=lots: expected a number"),
        ("next=1,next-token=2", "next-token is given twice"),
        ('{"restore": 6', "not a JSON mapping"),
    ):
        with pytest.raises(TriformError, match=named):
            finetune_fractions(given, tasks)
    with pytest.raises(TriformError, match="'genre' names no held-out task"):
        finetune_fractions("genre=0.5", tasks[:3])  # no labels, no genre task


def test_a_bad_finetune_mapping_is_one_line_naming_the_task_and_writes_nothing(tmp_path, capsys):
    from triform.cli import main

    data = write_text(tmp_path / "corpus.txt", 50)
    out = tmp_path / "compare"
    assert main(["compare", "--data", str(data), "--out", str(out), "--finetune", "restore=6,mask=0.25"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--finetune: 'mask' names no held-out task" in error
    assert not out.exists()


def labelled(path, n: int, seed: int = 0):
    """Brown's shape (document, genre, text) with a genre a tiny model can read off the words."""
    rows = ["document\tgenre\ttext"]
    for i, sentence in enumerate(sentences(n, seed)):
        genre = "animals" if any(w in sentence.lower().split() for w in ("cat", "dog", "bird")) else "things"
        rows.append(f"d{i // 5}\t{genre}\t{sentence}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def labelled_comparison(tmp_path_factory):
    """One small comparison with labelled records and a fraction of its own for each task."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("labelled")
    settings = small(
        folder,
        pairs=["stack:mlm(rate=0.3)"],
        repeats=1,
        budget=5e7,
        finetune="restore=2,genre=0.5,0.25",
        labels=str(labelled(folder / "sentences.tsv", 200)),
        labels_columns={"label": "genre"},
    )
    outputs = compare(settings, show=lambda line: None)
    torch.set_num_threads(threads)
    return settings, outputs, folder / "compare"


def test_each_task_is_given_its_own_fraction_of_the_budget(labelled_comparison):
    settings, outputs, out = labelled_comparison
    expected = {"next-token": 0.25, "masked-token": 0.25, "restore": 2.0, "genre": 0.5}
    for result in outputs["results"]:
        for task, fraction in expected.items():
            given = result[f"{task} fine-tuning"]
            steps, per_step = given["steps"], given["compute_per_step"]
            assert given["fraction"] == fraction and given["budget"] == fraction * settings.budget
            assert (steps - 1) * per_step < fraction * settings.budget <= steps * per_step  # just reaches it
    budgets = {row["task"]: row for row in csv.DictReader((out / "budgets.csv").open())}
    assert list(budgets) == ["pretraining", *expected]
    assert {task: float(budgets[task]["fraction"]) for task in expected} == expected
    stack_restore = [r["restore fine-tuning"]["steps"] for r in outputs["results"]]
    assert budgets["restore"]["steps (stack)"] == str(stack_restore[0]) == str(stack_restore[1])
    table = (out / "table.md").read_text()
    assert f"| restore | 2 | {2 * settings.budget:.2e} | {12 * settings.budget:.2e} | {stack_restore[0]} | – |" in table
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {row["restore fine-tuning steps"] for row in rows} == {str(stack_restore[0])}


def test_the_labelled_task_is_fine_tuned_and_scored_on_held_out_records(labelled_comparison):
    settings, outputs, out = labelled_comparison
    pretrained = json.loads(
        (out / "runs" / "stack-mlm-rate-0.3-bidirectional-seed0" / "pretrain" / "model" / "config.json").read_text()
    )
    assert pretrained["extra"]["recipe"]["options"]["rate"] == 0.3  # the pair's option reached the pretraining
    held_out = [json.loads(line) for line in (out / "data" / "labels-valid.jsonl").read_text().splitlines()]
    assert len(held_out) == 20 and {r["label"] for r in held_out} <= {"animals", "things"}  # every 10th of 200
    for result in outputs["results"]:
        assert 0 <= result["genre"]["accuracy"] <= 1 and 0 <= result["genre"]["macro_f1"] <= 1
        assert result["genre"]["records"] == 20
    baseline = next(r for r in outputs["results"] if r["objective"] == "none")
    model = json.loads((out / "runs" / "stack-none-seed0" / "genre" / "model" / "config.json").read_text())
    assert model["extra"]["from_scratch"] is True and model["extra"]["task"]["labels"] == ["animals", "things"]
    assert baseline["genre fine-tuning"]["steps"] >= 1
    reference = json.loads((out / "reference.json").read_text())["genre"]
    commonest = max(("animals", "things"), key=[r["label"] for r in held_out].count)
    guessed = sum(r["label"] == commonest for r in held_out) / 20  # the training split's commonest
    assert reference["accuracy"] in (guessed, 1 - guessed)
    header = (out / "table.md").read_text().splitlines()[0]
    assert header.endswith("| genre accuracy | genre macro-F1 |")
    assert "labels: the commonest" in (out / "table.md").read_text()
    assert "- **genre** (genre accuracy): won by " in outputs["findings"]


def fake_result(arch: str, objective: str, seed: int, scores: dict) -> dict:
    """A run's result as run_job writes it, with the headline scores given (others fixed)."""
    return {
        "arch": arch,
        "objective": objective,
        "pattern": None if objective == "none" else "causal",
        "seed": seed,
        "seconds": 1.0,
        "next-token": {"accuracy": scores["next"], "perplexity": 100.0},
        "masked-token": {"accuracy": scores["masked"]},
        "restore": {"exact": 0.0, "chrf": scores["restore"]},
        "genre": {"accuracy": scores["genre"], "macro_f1": scores["genre"] / 2},
    }


def table_of(runs: dict) -> list[dict]:
    """The aggregated table (with the genre task) of fake runs {(arch, objective): [scores per seed]}."""
    from triform.compare.plan import Entry
    from triform.compare.table import aggregate, score_columns

    results = [fake_result(a, o, seed, s) for (a, o), per_seed in runs.items() for seed, s in enumerate(per_seed)]
    chosen = [Entry(a, o, None if o == "none" else "causal") for a, o in runs]
    return aggregate(results, chosen, score_columns("genre"))


def test_findings_name_the_winner_of_each_task_and_on_average_with_the_spread():
    from triform.compare.findings import findings, mean_ranks

    # clm wins next and masked clearly, span wins restore within noise, none wins genre clearly.
    # Ranked per seed over the four tasks: clm (1, 1, 2, 2) -> 1.5 on seed 0 and (1, 1, 1, 2) -> 1.25
    # on seed 1, where it wins restore; span (2, 2, 1, 3) -> 2 and (2, 2, 2, 3) -> 2.25.
    runs = {
        ("stack", "clm"): [
            dict(next=0.30, masked=0.10, restore=20.0, genre=0.40),
            dict(next=0.31, masked=0.11, restore=22.0, genre=0.41),
        ],
        ("stack", "span"): [
            dict(next=0.20, masked=0.05, restore=23.0, genre=0.30),
            dict(next=0.21, masked=0.06, restore=21.5, genre=0.31),
        ],
        ("stack", "none"): [
            dict(next=0.10, masked=0.01, restore=5.0, genre=0.60),
            dict(next=0.11, masked=0.02, restore=6.0, genre=0.61),
        ],
    }
    table = table_of(runs)
    text = findings(table, None, "genre")
    assert (
        "- **next-token** (next-token accuracy): won by stack + clm + causal (30.5 ± 0.7 %), ahead of "
        "stack + span + causal (20.5 ± 0.7 %) by 10.0 points: clearly ahead." in text
    )
    assert (
        "- **restore** (restore chrF): won by stack + span + causal (22.2 ± 1.1), ahead of stack + clm + causal "
        "(21.0 ± 1.4) by 1.2: within noise." in text
    )
    assert "- **genre** (genre accuracy): won by stack, no pretraining (60.5 ± 0.7 %)" in text
    ranking = mean_ranks(table, "genre")
    assert [row["entry"].objective for row, _, _ in ranking] == ["clm", "span", "none"]
    assert ranking[0][1] == pytest.approx(1.375) and ranking[1][1] == pytest.approx(2.125)
    assert ranking[0][2] == pytest.approx(0.125 * 2**0.5) == ranking[1][2]  # the spread over the two seeds
    assert "- **on average over the 4 tasks** (mean rank among the 3 rows" in text
    assert "won by stack + clm + causal (1.4 ± 0.2), ahead of stack + span + causal (2.1 ± 0.2) by 0.8: clearly" in text


def test_head_to_head_holds_a_rival_against_its_rival_and_a_mixture_against_each_specialist():
    from triform.compare.findings import findings

    # electra trails mlm on genre beyond the noise; ul2 trails clm on next-token within noise and
    # beats span on restore clearly.
    runs = {
        ("stack", "mlm"): [
            dict(next=0.10, masked=0.30, restore=20.0, genre=0.40),
            dict(next=0.11, masked=0.31, restore=21.0, genre=0.41),
        ],
        ("stack", "electra"): [
            dict(next=0.09, masked=0.05, restore=20.0, genre=0.30),
            dict(next=0.10, masked=0.06, restore=21.0, genre=0.31),
        ],
        ("stack", "clm"): [
            dict(next=0.30, masked=0.02, restore=10.0, genre=0.35),
            dict(next=0.32, masked=0.03, restore=11.0, genre=0.36),
        ],
        ("stack", "span"): [
            dict(next=0.05, masked=0.01, restore=30.0, genre=0.20),
            dict(next=0.06, masked=0.02, restore=30.5, genre=0.21),
        ],
        ("stack", "ul2"): [
            dict(next=0.29, masked=0.20, restore=40.0, genre=0.38),
            dict(next=0.31, masked=0.21, restore=41.0, genre=0.39),
        ],
    }
    text = findings(table_of(runs), None, "genre")
    block = text[text.index("Head to head:") :]
    assert "- **stack + electra + causal against stack + mlm + causal**" in block
    assert (
        "  - genre (genre accuracy): 30.5 ± 0.7 % against 40.5 ± 0.7 %: stack + mlm + causal ahead by 10.0 points, "
        "clearly." in block
    )
    assert "- **stack + ul2 + causal against each specialist**:" in block
    assert (
        "on stack + clm + causal's own task, next-token (next-token accuracy): 30.0 ± 1.4 % against 31.0 ± 1.4 %: "
        "stack + clm + causal ahead by 1.0 points, within noise." in block
    )
    assert (
        "own task, restore (restore chrF): 40.5 ± 0.7 against 30.2 ± 0.4: stack + ul2 + causal ahead by 10.2, clearly"
        in block
    )
    assert "own task, masked-token" in block and "stack + electra + causal's own task" not in block  # no specialty
    assert block.count("  - on genre (genre accuracy), against ") == 3  # one per specialist: clm, mlm, span
    assert "on average (mean rank over the 4 tasks among all 5 rows, 1 best)" in block
    assert "stack + span + causal 4.2 ± 0.0 (the mixture ahead, clearly)" in block


def test_a_table_without_rivals_or_mixtures_has_no_head_to_head():
    from triform.compare.findings import findings

    runs = {
        ("stack", "clm"): [dict(next=0.3, masked=0.1, restore=20.0, genre=0.4)],
        ("stack", "mlm"): [dict(next=0.1, masked=0.3, restore=21.0, genre=0.3)],
    }
    assert "Head to head" not in findings(table_of(runs), None, "genre")
