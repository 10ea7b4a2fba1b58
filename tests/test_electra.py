"""ELECTRA (Clark et al. 2020): masking and replacement rates, the discriminator's labels, sampling,
the generator's size, training from the command line, fine-tuning its model folder, resuming."""

import json
import math

import pytest
import torch
from conftest import FIRST_WORD, SPECIALS, VOCAB_SIZE, tiny_config
from training_helpers import train_args, write_text

from triform.checkpoint import load_model
from triform.cli import build_parser, main
from triform.explain import explain_pair
from triform.models import build_model
from triform.models.stack import StackInputs
from triform.objectives import IGNORE, make_objective
from triform.objectives.batch import rows
from triform.objectives.electra import ElectraModel, ElectraOptions, generator_config, sample
from triform.train import checkpoint as ckpt
from triform.train.config import RunConfig, from_namespace, resolve
from triform.train.metrics import MetricsLog
from triform.train.run import train


def electra(**options):
    return make_objective("electra", SPECIALS, VOCAB_SIZE, **options)


def texts(n, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_WORD, VOCAB_SIZE, (n, length), generator=generator).tolist()


def run_once(objective, examples, seed=0, **config):
    torch.manual_seed(seed)
    trained = objective.training_module(build_model(tiny_config(**config)))
    batch = objective.prepare(examples, torch.Generator().manual_seed(seed))
    return trained, batch, trained(**batch.model_inputs())


def test_fifteen_percent_are_masked_and_at_most_those_are_replaced():
    objective = electra()
    _, batch, outputs = run_once(objective, texts(200, 40))
    real = batch.ids.numel() - 2 * batch.ids.shape[0]  # without [CLS] and [SEP]
    masked = batch.targets != IGNORE
    rate, bound = float(masked.sum()) / real, 4 * math.sqrt(0.15 * 0.85 / real)
    assert abs(rate - 0.15) < bound
    assert bool((batch.ids[masked] == SPECIALS.mask).all())  # every chosen token is [MASK] (§2)
    assert not bool(outputs.replaced[~masked].any())  # only masked positions are replaced
    assert 0 < int(outputs.replaced.sum()) <= int(masked.sum())


def test_the_labels_are_exactly_the_positions_whose_token_differs():
    objective = electra()
    _, batch, outputs = run_once(objective, texts(16, 20))
    masked = batch.targets != IGNORE
    assert torch.equal(outputs.replaced, outputs.corrupted != batch.originals)
    assert torch.equal(outputs.corrupted[~masked], batch.originals[~masked])  # untouched elsewhere
    assert torch.equal(batch.originals[masked], batch.targets[masked])
    special = torch.tensor(sorted(SPECIALS.all_ids))
    assert not bool(torch.isin(outputs.corrupted[masked], special).any())  # never [MASK] for the discriminator


def test_a_sample_equal_to_the_original_counts_as_original():
    objective = electra()
    torch.manual_seed(0)
    trained = objective.training_module(build_model(tiny_config()))
    with torch.no_grad():
        trained.generator.bias[FIRST_WORD + 3] = 1e4  # the generator always says FIRST_WORD + 3
    batch = objective.prepare([[FIRST_WORD + 3] * 20, [FIRST_WORD + 4] * 20], torch.Generator().manual_seed(0))
    outputs = trained(**batch.model_inputs())
    masked = batch.targets != IGNORE
    assert not bool(outputs.replaced[0].any())  # sampled the original: labelled original
    assert torch.equal(outputs.replaced[1], masked[1])  # sampled another token at every mask


def test_samples_follow_the_generators_distribution_and_skip_special_tokens():
    probabilities = torch.tensor([0.0, 0.2, 0.5, 0.3])
    logits = probabilities.clamp(min=1e-9).log().expand(20000, 4)
    never = torch.tensor([True, False, False, False])
    drawn = sample(logits + torch.tensor([50.0, 0, 0, 0]), torch.rand(20000), never)
    frequencies = torch.bincount(drawn, minlength=4).float() / 20000
    assert frequencies[0] == 0
    assert torch.allclose(frequencies, probabilities, atol=0.02)


def test_the_loss_is_the_same_however_a_batch_is_split():
    """Rows with different numbers of masks: the loss is a sum over tokens (train/loop.py)."""
    objective = electra()
    examples = [text[:length] for text, length in zip(texts(6, 30), (30, 7, 19, 3, 25, 12))]
    trained, batch, _ = run_once(objective, examples)
    assert len(set((batch.targets != IGNORE).sum(1).tolist())) > 1
    whole = objective.loss(trained(**batch.model_inputs()), batch)
    parts = sum(
        objective.loss(trained(**part.model_inputs()), part) * objective.n_targets(part)
        for part in (rows(batch, 0, 1), rows(batch, 1, 4), rows(batch, 4, 6))
    )
    torch.testing.assert_close(parts / objective.n_targets(batch), whole)


def test_no_gradient_flows_from_the_discriminator_through_the_samples():
    objective = electra()
    trained, batch, outputs = run_once(objective, texts(4, 20))
    _, detection = objective.sums(outputs, batch)
    detection.backward()
    assert all(p.grad is None for p in trained.generator.stack.blocks.parameters())
    assert trained.model.stack.embeddings.token.weight.grad is not None  # shared, trained by both


def test_generator_and_discriminator_share_the_embeddings_once():
    objective = electra(generator_scale=0.5, generator_layers=1)
    trained, _, _ = run_once(objective, texts(2, 10), d_model=64, n_heads=4, d_ff=128)
    names = list(trained.state_dict())
    assert sum("token.weight" in name for name in names) == 1
    assert len(trained.generator.stack.blocks) == 1
    assert trained.generator.project.out_features == 32


def test_the_generator_is_narrower_by_the_scale_in_whole_heads():
    config = tiny_config(d_model=256, n_heads=4, d_ff=1024, n_layers=12)  # ELECTRA-Small's discriminator
    small = generator_config(config, electra().options)
    assert (small.d_model, small.n_heads, small.d_ff, small.n_layers) == (64, 1, 256, 12)  # the paper's 1/4
    base = generator_config(tiny_config(d_model=768, n_heads=12, d_ff=3072), electra(generator_scale=1 / 3).options)
    assert (base.d_model, base.n_heads, base.d_ff) == (256, 4, 1024)  # ELECTRA-Base's generator


@pytest.mark.parametrize(
    "options, message",
    [
        ({"generator_scale": 0.0}, "generator_scale"),
        ({"generator_scale": 1.5}, "generator_scale"),
        ({"rate": 1.0}, "rate"),
        ({"generator_layers": 0}, "generator_layers"),
        ({"discriminator_weight": 0.0}, "discriminator_weight"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        electra(**options)


def test_inspect_marks_the_replaced_tokens():
    shown = explain_pair("stack", "electra", "the cat sat on the mat and then it ran under a big green tree", seed=1)
    rows = {line.split("  ")[0].strip(): line for line in shown.splitlines() if line.startswith(("disc", "repl"))}
    corrupted, labels = rows["discriminator input"].split()[2:], rows["replaced"].split()[1:]
    assert len(corrupted) == len(labels) and "1" in labels
    assert [token.startswith("*") for token in corrupted] == [label == "1" for label in labels]


def electra_argv(run, corpus, steps):
    argv = train_args(
        run, *corpus[:2], steps, "--objective.name", "electra", "--objective.electra.generator_scale", "0.5"
    )
    argv += ["--tokenizer.path", corpus[2], "--model.dropout", "0.1"]  # dropout: the resumed run must replay it
    return argv + ["--train.eval_every", "3", "--train.checkpoint_every", "3", "--train.keep_last", "3"]


def train_losses(run):
    return [r["loss"] for r in MetricsLog(run / "metrics.jsonl").read() if r["split"] == "train"]


@pytest.fixture(scope="module")
def electra_run(tmp_path_factory):
    """A 6-step run; one tokenizer for every run here (WordPiece training is not deterministic)."""
    folder = tmp_path_factory.mktemp("electra")
    train, valid, tokenizer = (
        write_text(folder / "train.txt", 200),
        write_text(folder / "valid.txt", 30, seed=1),
        folder / "tokenizer.json",
    )
    argv = ["tokenizer", "train", "--input", str(train), "--kind", "wordpiece", "--vocab_size", "200"]
    assert main([*argv, "--sentinels", "8", "--min_frequency", "1", "--output", str(tokenizer)]) == 0
    corpus = (train, valid, str(tokenizer))
    assert main(electra_argv(folder / "full", corpus, 6)) == 0
    return folder, corpus


def resolved_from(argv):
    args = build_parser().parse_args(argv)["train"].as_dict()
    args.pop("config", None)
    return resolve(from_namespace(RunConfig, args))


def test_training_from_the_command_line_saves_the_discriminator_with_its_recipe(electra_run):
    folder, _ = electra_run
    saved = load_model(folder / "full" / "model")
    assert saved.extra["recipe"]["objective"] == "electra"
    assert saved.extra["recipe"]["options"]["generator_scale"] == 0.5
    assert not any(name.startswith("generator") for name in saved.model.state_dict())
    trainer = torch.load(ckpt.checkpoints(folder / "full")[-1] / ckpt.TRAINER_STATE, weights_only=True)
    assert any(name.startswith("generator.") for name in trainer[ckpt.COMPANIONS])
    valid = [r for r in MetricsLog(folder / "full" / "metrics.jsonl").read() if r["split"] == "valid"]
    assert {"generator_loss", "discriminator_accuracy", "replaced"} <= set(valid[-1])


def test_a_resumed_run_restores_the_generator(electra_run, tmp_path):
    folder, corpus = electra_run
    argv, calls = electra_argv(tmp_path / "run", corpus, 6), []
    assert (
        train(resolved_from(argv), tmp_path / "run", should_stop=lambda: calls.append(1) or len(calls) == 3)
        == "stopped"
    )
    assert main([*argv, "--resume", "true"]) == 0
    final, reference = load_model(tmp_path / "run" / "model"), load_model(folder / "full" / "model")
    for (name, a), b in zip(final.model.state_dict().items(), reference.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert train_losses(tmp_path / "run") == train_losses(folder / "full")  # exactly, step by step


def test_a_resume_without_the_generator_is_refused(electra_run, tmp_path, capsys):
    folder, corpus = electra_run
    run, calls = tmp_path / "run", []
    assert (
        train(resolved_from(electra_argv(run, corpus, 6)), run, should_stop=lambda: calls.append(1) or len(calls) == 3)
        == "stopped"
    )
    trainer = ckpt.checkpoints(run)[-1] / ckpt.TRAINER_STATE
    state = torch.load(trainer, weights_only=True)
    del state[ckpt.COMPANIONS]
    torch.save(state, trainer)
    capsys.readouterr()
    assert main([*electra_argv(run, corpus, 6), "--resume", "true"]) == 1
    assert "holds no weights of the modules this objective trains" in capsys.readouterr().err


def test_the_saved_folder_fine_tunes_as_a_classifier(electra_run, tmp_path):
    from test_finetune_cli import finetune, write
    from training_helpers import WORDS

    folder, _ = electra_run
    rows = [{"text": f"the {w} sat", "label": "cat" if "cat" == w else "other"} for w in WORDS for _ in range(2)]
    train = write(tmp_path / "train.jsonl", rows)
    assert finetune("classify", str(folder / "full" / "model"), train, train, tmp_path / "run", 4) == 0
    task = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["extra"]["task"]
    assert task["pattern"] == "bidirectional"  # read as it was pretrained
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(tmp_path / "run" / "model"), "--data", train, "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(rows)


def test_the_server_offers_the_folders_embeddings_alone(electra_run):
    from triform.serve.models import load_served

    folder, _ = electra_run
    assert load_served("electra", folder / "full" / "model").tasks == ["embeddings"]


def test_eval_and_generation_of_the_folder_are_refused_in_one_line(electra_run, capsys):
    folder, corpus = electra_run
    model = str(folder / "full" / "model")
    assert main(["eval", "--model", model, "--data", str(corpus[1])]) == 1
    message = capsys.readouterr().err.strip()
    assert "generator is not saved" in message and "\n" not in message
    assert main(["generate", "--model", model, "the cat"]) == 1
    message = capsys.readouterr().err.strip()
    assert "trained with electra" in message and "\n" not in message


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--objective.pattern", "causal"], "stack + electra + causal is refused"),
        (["--model.arch", "encoder-decoder"], "encoder-decoder + electra is refused"),
        (["--objective.electra.generator_scale", "0"], "generator_scale"),
    ],
)
def test_senseless_configurations_are_refused_by_name(tmp_path, extra, message, capsys):
    corpus = write_text(tmp_path / "train.txt", 20)
    argv = train_args(tmp_path / "run", corpus, None, 2, "--objective.name", "electra", *extra)
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not (tmp_path / "run").exists()


def test_an_electra_option_under_another_objective_is_refused(tmp_path, capsys):
    corpus = write_text(tmp_path / "train.txt", 20)
    argv = train_args(tmp_path / "run", corpus, None, 2, "--objective.name", "mlm")
    assert main([*argv, "--objective.electra.generator_scale", "0.5"]) == 1
    assert "applies to the electra objective, not mlm" in capsys.readouterr().err


def test_the_training_module_is_what_trains():
    objective = electra()
    trained = objective.training_module(build_model(tiny_config()))
    assert isinstance(trained, ElectraModel) and objective.training_module is not None
    plain = make_objective("mlm", SPECIALS, VOCAB_SIZE)
    model = build_model(tiny_config())
    assert plain.training_module(model) is model


def test_two_processes_train_electra_as_one(electra_run, tmp_path):
    """DDP over the generator too; BERT's output transform, unused by electra, stays out of the loss."""
    from test_distributed import assert_same_weights, torchrun

    _, corpus = electra_run
    common = ("--preset", "tiny-bert", "--model.dropout", "0.0", "--train.batch_size", "8")
    assert main([*electra_argv(tmp_path / "one", corpus, 3), *common]) == 0
    torchrun([*electra_argv(tmp_path / "two", corpus, 3), *common, "--train.grad_accum", "2"])
    assert train_losses(tmp_path / "two") == pytest.approx(train_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "two" / "model", tmp_path / "one" / "model")
    two = torch.load(ckpt.checkpoints(tmp_path / "two")[-1] / ckpt.TRAINER_STATE, weights_only=True)
    one = torch.load(ckpt.checkpoints(tmp_path / "one")[-1] / ckpt.TRAINER_STATE, weights_only=True)
    for name, value in one[ckpt.COMPANIONS].items():
        torch.testing.assert_close(two[ckpt.COMPANIONS][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_another_objectives_batch_runs_through_the_model_alone():
    """So that a mixture can train electra beside, say, mlm on the same module."""
    torch.manual_seed(0)
    model = build_model(tiny_config())
    trained = electra().training_module(model)
    batch = make_objective("mlm", SPECIALS, VOCAB_SIZE).prepare(texts(2, 12), torch.Generator().manual_seed(0))
    torch.testing.assert_close(trained(**batch.model_inputs()), model(**batch.model_inputs()))


def test_compute_counts_the_generator_beside_the_discriminator():
    """triform compare budgets by Objective.compute: electra's generator reads every token too, at about
    generator_scale² of the discriminator's parameters, so electra is charged for it."""
    examples = [list(range(30, 50))]
    parameters = {"stack": 1000}
    for scale in (0.25, 0.5):
        electra = make_objective("electra", SPECIALS, VOCAB_SIZE, arch="stack", generator_scale=scale)
        mlm = make_objective("mlm", SPECIALS, VOCAB_SIZE, arch="stack")
        batch = electra.prepare(examples, torch.Generator().manual_seed(0))
        plain = mlm.compute(mlm.prepare(examples, torch.Generator().manual_seed(0)), parameters)
        assert electra.compute(batch, parameters) == pytest.approx(plain * (1 + scale**2))


def test_in_a_packed_row_each_document_is_judged_alone():
    from conftest import VARIANTS

    objective = make_objective("electra", SPECIALS, VOCAB_SIZE, packed=True)
    torch.manual_seed(0)
    trained = objective.training_module(build_model(tiny_config(**VARIANTS["bert-parts"]))).eval()
    documents = [list(range(30, 37)), [40, 41, 42], list(range(50, 56))]
    batch = objective.prepare([objective.packed_window(documents)], torch.Generator().manual_seed(0))
    assert batch.documents is not None
    with torch.no_grad():
        outputs = trained(**batch.model_inputs())
        for number in range(len(documents)):
            at = (batch.documents[0] == number).nonzero()[:, 0]
            ids = outputs.corrupted[0, at][None]  # the document as the discriminator read it, alone
            alone = trained.detector(trained.model.hidden_states(StackInputs(ids, "bidirectional")))
            torch.testing.assert_close(outputs.scores[0, at], alone[0, :, 0], atol=2e-5, rtol=0)


def test_the_benchmark_runs_at_its_tiny_size(capsys, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "electra.py"
    spec = importlib.util.spec_from_file_location("electra_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    threads = torch.get_num_threads()
    try:
        argv = ["--tiny", "--repeats", "1", "--warmup", "0", "--precision", "fp32", "--json", str(tmp_path / "e.json")]
        assert benchmark.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    assert "electra 0.25:" in capsys.readouterr().out
    table = benchmark.section(json.loads((tmp_path / "e.json").read_text()))
    assert "| electra, generator_scale 0.25 | 16, 1, 2 |" in table  # the tiny BERT: 64 wide, 4 heads, 2 layers


def test_fsdp_is_refused_for_a_problem_with_modules_of_its_own():
    from triform.errors import TriformError
    from triform.train.config import LoopConfig, OptimConfig
    from triform.train.distributed import Processes
    from triform.train.loop import Job, Saved, Trainer

    loop = LoopConfig(strategy="fsdp", batch_size=4)
    job = Job(electra(), build_model(tiny_config()), None, None, loop, OptimConfig(), Saved(None, None, {}), "", "")
    with pytest.raises(TriformError, match="train.strategy: fsdp shards the model alone"):
        Trainer(job, Processes(rank=0, world_size=2), "unused")


def test_every_option_is_reachable_from_the_command_line(tmp_path):
    corpus = write_text(tmp_path / "train.txt", 20)
    argv = train_args(tmp_path / "run", corpus, None, 2, "--objective.name", "electra")
    options = ["rate", "0.2", "generator_scale", "0.5", "generator_layers", "1", "discriminator_weight", "20"]
    for name, value in zip(options[::2], options[1::2]):
        argv += [f"--objective.electra.{name}", value]
    recipe = resolved_from(argv).recipe
    assert (recipe.objective, recipe.pattern) == ("electra", "bidirectional")
    assert recipe.options == ElectraOptions(rate=0.2, generator_scale=0.5, generator_layers=1, discriminator_weight=20)
