"""One set of weights, every use: a stack trained with a mixture from the command line continues text,
fills masks and fine-tunes for classification and text-to-text, each as the part of the mixture that
learned it; a resumed mixture draws what an uninterrupted one draws; a refused part stops the run
before anything is computed or written."""

import json
import re

import pytest
from task_data import classify_rows, text2text_rows
from training_helpers import train_args, write_text

from triform.checkpoint import load_model
from triform.cli import build_parser, main
from triform.generate import TextGenerator
from triform.objectives.layout import CONTINUE, SOURCE_TARGET
from triform.serve.models import load_served
from triform.tasks.embed import Embedder
from triform.train.config import RunConfig, from_namespace, resolve
from triform.train.metrics import MetricsLog
from triform.train.run import train

MIX = '{"clm": 0.25, "mlm": 0.25, "span": 0.25, "prefix-lm": 0.25}'
FAST = ["--train.log_every", "2", "--optim.warmup_steps", "2", "--train.precision", "fp32"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return write_text(folder / "train.txt", 300), write_text(folder / "valid.txt", 40, seed=1)


@pytest.fixture(scope="module")
def mixed(corpus, tmp_path_factory):
    """A stack trained with clm, mlm, span and prefix LM in one mixture, with mode tokens."""
    run = tmp_path_factory.mktemp("mixed") / "run"
    argv = train_args(run, *corpus, 6, "--objective.mix", MIX, "--objective.mode_tokens", "true")
    assert main(argv + ["--train.eval_every", "3"]) == 0
    return run


def records(run_dir, split="train"):
    return [r for r in MetricsLog(run_dir / "metrics.jsonl").read() if r["split"] == split]


def test_a_refused_part_is_named_before_any_compute(tmp_path, corpus, capsys):
    argv = train_args(tmp_path / "run", *corpus, 4, "--objective.mix", '{"mlm": 1, "clm@bidirectional": 1}')
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert "mixture part 'clm@bidirectional': stack + clm + bidirectional is refused" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "run").exists()
    assert main(train_args(tmp_path / "run", *corpus, 4, "--objective.mode_tokens", "true")) == 1
    assert "objective.mode_tokens: applies to a mixture" in capsys.readouterr().err


def test_a_mixture_trained_model_is_evaluated_part_by_part(mixed, corpus, capsys):
    assert main(["eval", "--model", str(mixed / "model"), "--data", str(corpus[1])]) == 0
    out = capsys.readouterr().out
    assert all(f"loss/{label} " in out for label in ("clm", "mlm", "span", "prefix-lm"))


def test_losses_are_logged_and_drawn_per_part(mixed):
    train_records, valid = records(mixed), records(mixed, "valid")
    assert all(set(r["losses"]) <= {"clm", "mlm", "span", "prefix-lm"} for r in train_records)
    assert len({name for r in train_records for name in r["losses"]}) > 1
    assert {f"loss/{label}" for label in ("clm", "mlm", "span", "prefix-lm")} <= set(valid[-1])
    assert (mixed / "loss.png").is_file()
    recipe = json.loads((mixed / "model" / "config.json").read_text())["extra"]["recipe"]
    assert recipe["objective"] == "mixture" and recipe["options"]["mode_tokens"] is True
    assert [p["label"] for p in recipe["options"]["mix"]] == ["clm", "mlm", "span", "prefix-lm"]
    uses = json.loads((mixed / "model" / "config.json").read_text())["extra"]["uses"]  # what the folder can do
    assert uses == {"generate": "clm", "fill-mask": "mlm", "classify": "mlm", "text2text": "prefix-lm"}


def resolved_from(argv):
    args = build_parser().parse_args(argv)["train"].as_dict()
    args.pop("config", None)
    return resolve(from_namespace(RunConfig, args))


def test_a_resumed_mixture_draws_what_an_uninterrupted_one_draws(tmp_path, corpus):
    extra = ("--objective.mix", MIX, "--objective.mode_tokens", "true", "--train.grad_accum", "2")
    argv = train_args(tmp_path / "run", *corpus, 8, *extra)
    assert main(train_args(tmp_path / "full", *corpus, 8, *extra)) == 0
    calls = []
    outcome = train(resolved_from(argv), tmp_path / "run", should_stop=lambda: calls.append(1) or len(calls) == 3)
    assert outcome == "stopped"
    assert main(argv + ["--resume", "true"]) == 0
    drawn, uninterrupted = records(tmp_path / "run"), records(tmp_path / "full")
    assert [r["losses"] for r in drawn] == [r["losses"] for r in uninterrupted]  # the same parts, the same losses
    assert len({name for r in drawn for name in r["losses"]}) > 1

    def counts(folder):  # the micro-batches each part made, in each saved folder's config.json
        return json.loads((folder / "config.json").read_text())["extra"]["drawn"]

    assert counts(tmp_path / "run" / "model") == counts(tmp_path / "full" / "model")
    assert sum(counts(tmp_path / "full" / "model").values()) == 16
    stopped = tmp_path / "run" / "checkpoints" / "step-0000003"
    assert sum(counts(stopped).values()) == 6  # what the resumed run counted on from


def test_one_model_continues_text_and_fills_masks_as_its_parts(mixed, capsys):
    folder = mixed / "model"
    generator = TextGenerator.load(folder)
    modes = dict(generator.specials.modes)
    default, prefix = generator.layout_for(None), generator.layout_for("prefix-lm")
    assert (default.kind, default.pattern, default.mode) == (CONTINUE, "causal", modes["s2s"])  # the clm part
    assert (prefix.kind, prefix.pattern, prefix.mode) == (SOURCE_TARGET, "prefix", modes["s2s"])
    assert generator.layout_for("span").mode == modes["nlu"]
    assert len(generator.generate("the cat", max_new_tokens=3).ids) <= 3
    masked = generator.objective_for(None).masked_inputs([generator.with_masks("the [MASK] sat")])
    assert masked.pattern == "bidirectional" and int(masked.ids[0, 0]) == modes["nlu"]  # as mlm trained
    assert main(["generate", "--model", str(folder), "--max_new_tokens", "3", "--use", "prefix-lm", "the cat"]) == 0
    assert main(["fill-mask", "--model", str(folder), "the cat [MASK] on the mat."]) == 0
    assert main(["translate", "--model", str(folder), "--max_new_tokens", "3", "the cat"]) == 0  # as prefix-lm
    assert main(["generate", "--model", str(folder), "--use", "denoise", "the cat"]) == 1
    assert "no part 'denoise' (its parts: clm, mlm, span, prefix-lm)" in capsys.readouterr().err
    assert load_served("mixed", folder).tasks == ["fill-mask", "completions", "embeddings"]  # served as both


def finetune(task, init, rows, run_dir, *options):
    (run_dir.parent / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = str(run_dir.parent / f"{task}.jsonl")
    argv = ["finetune", "--task", task, "--init", str(init), "--data.train", data, "--data.valid", data]
    argv += ["--run_dir", str(run_dir), "--train.steps", "4", "--train.eval_every", "4", "--train.batch_size", "8"]
    return main(argv + FAST + list(options))


def test_one_model_fine_tunes_for_classification_and_text_to_text(mixed, tmp_path):
    modes = dict(TextGenerator.load(mixed / "model").specials.modes)
    assert finetune("classify", mixed / "model", classify_rows(32, seed=1), tmp_path / "classify") == 0
    task = json.loads((tmp_path / "classify" / "model" / "config.json").read_text())["extra"]["task"]
    assert task["pattern"] == "bidirectional" and task["mode_token"] == modes["nlu"]  # read as mlm read it
    assert finetune("text2text", mixed / "model", text2text_rows(32, seed=2), tmp_path / "text2text") == 0
    saved = load_model(tmp_path / "text2text" / "model").extra["recipe"]
    assert (saved["objective"], saved["pattern"], saved["mode"]) == ("seq2seq", "prefix", "s2s")  # as prefix-lm
    generator = TextGenerator.load(tmp_path / "text2text" / "model")
    assert generator.layout.frame([40]) == [modes["s2s"], 40, generator.specials.sep]
    embedder = Embedder.of(load_model(mixed / "model"))  # embeddings read the body as classification does
    assert embedder.framing.mode == modes["nlu"] and embedder.framing.pattern == "bidirectional"


@pytest.mark.parametrize("preset", ["tiny-ul2", "tiny-unilm"])
def test_the_mixture_presets_train(tmp_path, corpus, preset):
    tiny = ("--model.d_model", "32", "--model.n_heads", "2", "--model.d_ff", "64", "--model.d_head", "16")
    assert main(train_args(tmp_path / "run", *corpus, 2, "--preset", preset, *tiny)) == 0
    assert load_model(tmp_path / "run" / "model").extra["recipe"]["objective"] == preset.removeprefix("tiny-")


def test_inspect_shows_the_part_drawn_and_its_mode_token(capsys):
    assert main(["inspect", "--objective", "ul2", "--text", "the cat sat on the mat and ran", "--seed", "3"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("stack + ul2: drew ") and re.search(r"mode token \[(NLU|NLG|S2S)\]$", first)


def test_a_toml_configuration_gives_a_mixture_as_a_table_or_a_list_of_parts(tmp_path):
    table = tmp_path / "table.toml"
    table.write_text('[data]\ntrain = "x.txt"\n[objective]\nmode_tokens = true\nmix = {clm = 0.5, "mlm@causal" = 0.5}')
    parts = tmp_path / "parts.toml"
    parts.write_text(
        '[data]\ntrain = "x.txt"\n[[objective.mix]]\nobjective = "span"\nweight = 3\n'
        'options = {mean_span_length = 8.0}\nlabel = "long spans"\n[[objective.mix]]\nobjective = "clm"\n'
    )
    options = resolved_from(["train", "--config", str(table)]).recipe.options
    assert options.mode_tokens and [(p["label"], p.get("pattern")) for p in options.mix] == [
        ("clm", None),
        ("mlm@causal", "causal"),
    ]
    resolved = resolved_from(["train", "--config", str(parts)])
    assert [(p["label"], p["weight"]) for p in resolved.recipe.options.mix] == [("long spans", 3.0), ("clm", 1.0)]
    saved = resolved.to_dict()["objective"]  # the run's config.yaml gives the same run back
    assert saved["name"] == "mixture" and saved["mix"][0]["options"] == {"mean_span_length": 8.0}
