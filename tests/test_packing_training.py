"""`--data.pack documents|stream` from the command line to the objective, the model folder and `triform eval`."""

import json

import pytest
from training_helpers import train_args, write_text

from triform.checkpoint import load_model
from triform.cli import main
from triform.errors import TriformError
from triform.objectives import Recipe, read_recipe
from triform.train.metrics import MetricsLog


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return write_text(folder / "train.txt", 200), write_text(folder / "valid.txt", 40, seed=1)


@pytest.mark.parametrize("preset", ["tiny-gpt", "tiny-bert", "tiny-t5"])
def test_the_pack_trains_is_recorded_and_evaluated_the_same_way(tmp_path, corpus, preset):
    """Validation during training and `triform eval` of the saved model see the same windows laid
    out the same way, so they report the same loss; the two packs report different ones."""
    losses = {}
    for pack in ("documents", "stream"):
        run = tmp_path / pack
        argv = train_args(run, *corpus, 2, "--preset", preset, "--data.pack", pack, "--train.eval_batches", "0")
        assert main(argv) == 0
        recipe = read_recipe(load_model(run / "model").extra, load_model(run / "model").config.arch)
        assert recipe.pack == pack
        validation = [r for r in MetricsLog(run / "metrics.jsonl").read() if r["split"] == "valid"][-1]
        out = run / "eval.json"
        # The batches of training's validation (train.batch_size 4): masks are drawn per batch.
        evaluation = ["eval", "--model", str(run), "--data", str(corpus[1]), "--batch_size", "4"]
        assert main([*evaluation, "--precision", "fp32", "--output", str(out)]) == 0
        evaluated = json.loads(out.read_text())
        assert evaluated["loss"] == pytest.approx(validation["loss"], abs=1e-4)
        losses[pack] = evaluated["loss"]
    assert losses["documents"] != pytest.approx(losses["stream"], abs=1e-4)


def test_documents_is_the_default_and_a_bad_pack_is_refused(tmp_path, corpus, capsys):
    from test_train import resolved_from

    assert resolved_from(train_args(tmp_path / "a", *corpus)).recipe.pack == "documents"
    assert main(train_args(tmp_path / "b", *corpus, 1, "--data.pack", "sentences")) == 2
    assert "data.pack: expected one of" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_recipe_written_before_packs_were_recorded_reads_as_the_stream():
    assert read_recipe({"recipe": {"objective": "clm", "pattern": "causal"}}, "stack").pack == "stream"
    assert read_recipe({"objective": "mlm"}, "stack").pack == "stream"
    assert Recipe.from_dict(Recipe("span", pack="documents").to_dict()).pack == "documents"
    with pytest.raises(TriformError, match="pack must be one of"):
        Recipe("clm", pack="lines")
