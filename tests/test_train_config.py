import math

import pytest

from triform.cli import build_parser, main
from triform.errors import ConfigError
from triform.train.config import RunConfig, from_namespace, resolve
from triform.train.optim import lr_factor


def resolved(*argv):
    args = build_parser().parse_args(["train", "--data.train", "x.txt", *argv])["train"].as_dict()
    args.pop("config", None)
    return resolve(from_namespace(RunConfig, args))


def test_a_preset_gives_the_model_and_objective_and_the_command_line_overrides_it():
    run = resolved("--preset", "tiny-bert", "--model.n_layers", "4")
    assert (
        run.model.n_layers == 4
        and run.model.token_types == 2
        and run.objective == "mlm"
        and run.pattern == "bidirectional"
    )
    assert resolved("--preset", "tiny-vaswani").recipe.label_smoothing == 0.1
    cross = resolved(
        "--preset",
        "tiny-gpt",
        "--objective.name",
        "mlm",
        "--objective.pattern",
        "causal",
        "--objective.mlm.rate",
        "0.2",
    )
    assert (cross.objective, cross.pattern, cross.recipe.options.rate) == ("mlm", "causal", 0.2)
    assert cross.recipe.options.whole_word is False  # the objective's own default
    assert resolved().model.arch == "stack" and resolved().objective == "clm"


def test_yaml_and_toml_files_with_later_flags_winning(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("preset: tiny-gpt\nmodel:\n  n_layers: 3\n  d_model: 96\ntrain:\n  steps: 50\n")
    run = resolved("--config", str(yaml_file), "--model.n_layers", "5")
    assert (run.model.n_layers, run.model.d_model, run.config.train.steps) == (5, 96, 50)
    toml_file = tmp_path / "run.toml"
    toml_file.write_text('preset = "tiny-t5"\n[model]\nn_layers = 3\n[optim]\nschedule = "inverse-sqrt"\n')
    run = resolved("--config", str(toml_file))
    assert (run.model.n_layers, run.objective, run.config.optim.schedule) == (3, "span", "inverse-sqrt")


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        ("model:\n  n_layer: 3\n", "yaml", "n_layer"),
        ('[model]\nn_layers = "three"\n', "toml", "n_layers"),
        ("[model\nn_layers = 3\n", "toml", "invalid TOML"),
        ("train:\n  steps: many\n", "yaml", "steps"),
    ],
)
def test_unknown_keys_and_wrong_types_in_a_file_are_errors(tmp_path, capsys, content, suffix, message):
    path = tmp_path / f"run.{suffix}"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--data.train", "x.txt", "--config", str(path)])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


def test_wrong_types_and_unknown_flags_on_the_command_line(capsys):
    for argv in (["--model.n_layers", "four"], ["--model.n_layer", "4"], ["--train.precision", "fp8"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--data.train", "x.txt", *argv])
    assert "fp8" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--objective.name", "clm", "--objective.pattern", "bidirectional"), "is refused"),
        (("--objective.mlm.rate", "0.2"), "objective.mlm.rate: applies to the mlm objective, not clm"),
        (("--model.d_model", "30", "--model.n_heads", "4"), "model.n_heads: d_model 30 is not divisible"),
        (
            ("--train.batch_size", "6", "--train.grad_accum", "4"),
            "train.batch_size: 6 is not divisible by train.grad_accum 4",
        ),
        (("--optim.lr", "-1"), "optim.lr: expected a positive learning rate"),
        (("--preset", "tiny-gpt9"), "unknown preset 'tiny-gpt9'"),
    ],
)
def test_values_that_cannot_train_are_refused_by_field(argv, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        resolved(*argv)


def test_the_cli_reports_a_config_error_in_one_line(tmp_path, capsys):
    assert (
        main(["train", "--data.train", "x.txt", "--run_dir", str(tmp_path / "r"), "--objective.mlm.rate", "0.3"]) == 1
    )
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_schedules():
    def factor(schedule, step, final=0.1):
        return lr_factor(step, schedule=schedule, warmup=10, total=110, final_ratio=final)

    assert [factor("cosine", s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor("cosine", 59) == pytest.approx(0.55) and factor("cosine", 109) == pytest.approx(0.1)
    assert factor("linear", 59) == pytest.approx(0.55) and factor("linear", 500) == pytest.approx(0.1)
    assert factor("inverse-sqrt", 39) == pytest.approx(math.sqrt(10 / 40))
    assert factor("constant", 100) == 1.0
