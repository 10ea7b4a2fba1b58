"""Contrastive fine-tuning of sentence embeddings (`triform finetune --task embed`): the loss is
MultipleNegativesRankingLoss, fine-tuning raises the Spearman correlation of cosine similarity on
held-out scored pairs, the folder embeds with `triform embed`, and a bad pairs file names its line."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from task_data import one_thread  # noqa: F401 (an autouse fixture)

from triform.checkpoint import load_model, save_model
from triform.cli import main
from triform.config import ModelConfig
from triform.explain import word_tokenizer
from triform.models import build_model
from triform.objectives import Recipe
from triform.serve.models import load_served
from triform.tasks import Framing, make_task, read_records
from triform.tasks.checkpoint import load_task_model
from triform.tasks.embed import Embedder, EmbeddingModel, Pooling
from triform.tasks.metrics import spearman
from triform.vocab import SpecialTokens

# A meaning is a pair (colour i, animal j); each concept has three words that mean it, and filler
# words carry nothing. Paraphrases share the meaning, rarely a word, so only training can tell
# that c0s1 and c0s2 say the same.
SYNONYMS = 3
COLOURS = [[f"c{i}s{k}" for k in range(SYNONYMS)] for i in range(6)]
ANIMALS = [[f"a{j}s{k}" for k in range(SYNONYMS)] for j in range(6)]
FILLERS = [f"w{i}" for i in range(20)]
VOCABULARY = " ".join(word for group in COLOURS + ANIMALS for word in group) + " " + " ".join(FILLERS)


def sentence(rng: random.Random, colour: int, animal: int) -> str:
    words = rng.choices(FILLERS, k=rng.randint(1, 4))
    concepts = [rng.choice(COLOURS[colour]), rng.choice(ANIMALS[animal])]
    rng.shuffle(concepts)
    for concept in concepts:
        words.insert(rng.randint(0, len(words)), concept)
    return " ".join(words)


def pair_rows(n: int, seed: int, negatives: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        colour, animal = rng.randrange(6), rng.randrange(6)
        row = {"anchor": sentence(rng, colour, animal), "positive": sentence(rng, colour, animal)}
        if negatives:  # the same colour, another animal: a near miss
            row["negative"] = sentence(rng, colour, (animal + rng.randrange(1, 6)) % 6)
        rows.append(row)
    return rows


def scored_rows(n: int, seed: int) -> list[dict]:
    """STS-like pairs: score 5 for the same meaning, 2.5 for one concept shared, 0 for none."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        colour, animal = rng.randrange(6), rng.randrange(6)
        shared = rng.choice([0, 1, 2])
        other_colour = colour if shared >= 1 else (colour + rng.randrange(1, 6)) % 6
        other_animal = animal if shared == 2 else (animal + rng.randrange(1, 6)) % 6
        rows.append(
            {
                "text_a": sentence(rng, colour, animal),
                "text_b": sentence(rng, other_colour, other_animal),
                "score": 2.5 * shared,
            }
        )
    return rows


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def random_body(folder, d_model: int = 64, arch: str = "stack", objective: str = "mlm"):
    tok = word_tokenizer(VOCABULARY)
    config = ModelConfig(
        arch=arch,
        vocab_size=tok.get_vocab_size(),
        d_model=d_model,
        n_heads=4,
        d_ff=2 * d_model,
        n_layers=2,
        max_len=24,
        dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(0)
    extra = {"recipe": Recipe(objective).to_dict()}
    save_model(build_model(config), folder, specials=SpecialTokens.from_tokenizer(tok), tokenizer=tok, extra=extra)
    return str(folder)


def similarity_spearman(folder, rows) -> float:
    embedder = Embedder.load(folder)
    a, b = embedder.embed([r["text_a"] for r in rows]), embedder.embed([r["text_b"] for r in rows])
    return spearman(F.cosine_similarity(a, b).tolist(), [r["score"] for r in rows])


def finetune_argv(init, train, valid, run_dir, steps, *options):
    argv = ["finetune", "--task", "embed", "--init", init, "--data.train", train, "--run_dir", str(run_dir)]
    if valid is not None:
        argv += ["--data.valid", valid]
    fast = ["--train.log_every", "10", "--optim.warmup_steps", "10", "--train.precision", "fp32"]
    return argv + ["--train.steps", str(steps), "--train.batch_size", "32", "--optim.lr", "3e-3", *fast, *options]


def test_the_loss_is_cross_entropy_over_scaled_cosines_of_every_candidate_of_the_batch(tmp_path):
    task = make_task("embed", framing(), word_tokenizer(VOCABULARY))
    rows = pair_rows(3, 0) + pair_rows(2, 1, negatives=True)
    records = read_records(write(tmp_path / "pairs.jsonl", rows), task.training_columns())
    batch = task.collate(task.training_features(records))
    assert batch.ids.shape[0] == 5 + 5 + 2  # anchors, positives, then the hard negatives
    vectors = torch.randn(12, 8)
    anchors, candidates = F.normalize(vectors[:5], dim=-1), F.normalize(vectors[5:], dim=-1)
    by_hand = (
        -sum(torch.log_softmax(20 * candidates @ anchors[i], dim=0)[i] for i in range(5)) / 5
    )  # anchor i's positive is candidate i
    torch.testing.assert_close(task.loss(vectors, batch), by_hand)


def framing():
    tok = word_tokenizer(VOCABULARY)
    return Framing("stack", "bidirectional", SpecialTokens.from_tokenizer(tok), 24)


def test_the_pooling_a_body_was_saved_with_is_kept_unless_an_option_sets_it():
    task = make_task("embed", framing(), word_tokenizer(VOCABULARY))
    assert task.pooling == Pooling("mean")  # the default of a bidirectional stack
    task.start_from({"pooling": {"how": "cls", "normalize": True}})  # as an imported sentence-transformers model
    assert task.pooling == Pooling("cls", normalize=True)
    task = make_task("embed", framing(), word_tokenizer(VOCABULARY), pooling="last")
    task.start_from({"pooling": {"how": "cls", "normalize": True}})
    assert task.pooling == Pooling("last", normalize=True)
    assert task.body_extra() == {"pooling": {"how": "last", "normalize": True, "pattern": "bidirectional"}}
    with pytest.raises(ValueError, match="scale: expected a positive number"):
        make_task("embed", framing(), word_tokenizer(VOCABULARY), scale=0.0)
    with pytest.raises(ValueError, match="lm_weight: the embed task"):
        make_task("embed", framing(), word_tokenizer(VOCABULARY), lm_weight=0.5)


def test_the_embedding_model_is_the_body_under_its_own_names(tmp_path):
    body = load_model(random_body(tmp_path / "body")).model
    model = EmbeddingModel(body, framing(), Pooling("mean"))
    assert list(model.state_dict()) == list(body.state_dict())
    assert all(a is b for a, b in zip(model.parameters(), body.parameters()))
    model.train()
    assert body.training and all(m.training for m in body.modules())
    model.eval()
    assert not body.training


def test_contrastive_finetuning_raises_spearman_on_held_out_pairs(tmp_path):
    init = random_body(tmp_path / "init")
    train = write(tmp_path / "train.jsonl", pair_rows(600, 0) + pair_rows(200, 1, negatives=True))
    valid = write(tmp_path / "valid.jsonl", scored_rows(150, 2))
    held_out = scored_rows(300, 3)
    test = write(tmp_path / "test.jsonl", held_out)
    run_dir = tmp_path / "run"
    options = ["--embed.normalize", "true", "--train.eval_every", "30"]
    assert main(finetune_argv(init, train, valid, run_dir, 60, *options)) == 0
    before, after = similarity_spearman(init, held_out), similarity_spearman(run_dir / "best", held_out)
    assert after > 0.8 and after > before + 0.3, (before, after)
    valid_records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in valid_records if r["split"] == "valid"] == [30, 60]
    assert all("spearman" in r and "loss" not in r for r in valid_records if r["split"] == "valid")
    assert (run_dir / "loss.png").is_file()
    # The task's own evaluation path: predictions of cosine similarity, and Spearman on them.
    metrics, predictions = tmp_path / "metrics.json", tmp_path / "predictions.jsonl"
    argv = ["predict", "--model", str(run_dir / "best"), "--data", test, "--output", str(predictions)]
    assert main(argv + ["--metrics", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["spearman"] == pytest.approx(after, abs=1e-4)
    assert len(predictions.read_text().splitlines()) == len(held_out)
    # `triform eval --task embed` scores any folder: the run's model, and the body before fine-tuning.
    for model, expected in ((run_dir, similarity_spearman(run_dir / "model", held_out)), (init, before)):
        assert main(["eval", "--task", "embed", "--model", str(model), "--data", test, "--output", str(metrics)]) == 0
        assert json.loads(metrics.read_text())["spearman"] == pytest.approx(expected, abs=1e-4)
    # The folder embeds as trained: mean pooling, normalised, by the library and the command.
    embedder = Embedder.load(run_dir / "best")
    assert embedder.pooling == Pooling("mean", normalize=True)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(r["text_a"] for r in held_out[:4]) + "\n")
    out = tmp_path / "vectors.npy"
    assert main(["embed", "--model", str(run_dir / "best"), "--input", str(texts), "--output", str(out)]) == 0
    vectors = np.load(out)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, embedder.embed(texts.read_text().splitlines()).numpy(), atol=1e-5)
    served = load_served("emb", run_dir / "best")  # the server predicts similarities and embeds
    assert served.tasks == ["predict", "embeddings"]
    torch.testing.assert_close(served.embedder.embed(["w1 c0s0"]), embedder.embed(["w1 c0s0"]))
    # ... and a fine-tuned embedding model starts another fine-tuning as its body.
    again = tmp_path / "again"
    assert main(finetune_argv(str(run_dir / "best"), train, None, again, 2)) == 0
    assert Embedder.load(again / "model").pooling == Pooling("mean", normalize=True)


@pytest.mark.parametrize(
    "arch, objective, pooling",
    [("stack", "mlm", "mean"), ("stack", "clm", "last"), ("encoder-decoder", "seq2seq", "mean")],
)
def test_every_body_finetunes_and_embeds_as_it_was_trained(tmp_path, arch, objective, pooling):
    init = random_body(tmp_path / "init", d_model=32, arch=arch, objective=objective)
    train = write(tmp_path / "train.jsonl", pair_rows(16, 0, negatives=True))
    assert main(finetune_argv(init, train, None, tmp_path / "run", 3, "--train.batch_size", "8")) == 0
    embedder = Embedder.load(tmp_path / "run" / "model")
    assert embedder.pooling == Pooling(pooling)  # the default for how the body reads text
    model, task, _ = load_task_model(tmp_path / "run" / "model")
    texts = ["w1 c0s0 a1s2", "c2s1 w4"]
    batch = task.collate(
        task.encode_all(
            read_records(
                write(tmp_path / "p.jsonl", [{"text_a": texts[0], "text_b": texts[1], "score": 1.0}]), task.inputs
            ),
            with_targets=False,
        )
    )
    with torch.no_grad():
        vectors = model(**batch.model_inputs())
    torch.testing.assert_close(embedder.embed(texts), vectors, atol=1e-5, rtol=1e-5)
    trained, initial = load_model(tmp_path / "run" / "model").model, load_model(init).model
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), initial.parameters()))


def test_a_body_finetuned_under_another_pattern_embeds_under_it(tmp_path):
    init = random_body(tmp_path / "init", d_model=32)  # pretrained with mlm: read bidirectionally by default
    train = write(tmp_path / "train.jsonl", pair_rows(16, 0))
    causal = ["--pattern", "causal", "--train.batch_size", "8"]
    assert main(finetune_argv(init, train, None, tmp_path / "run", 2, *causal)) == 0
    embedder = Embedder.load(tmp_path / "run" / "model")
    assert embedder.framing.pattern == "causal" and embedder.pooling == Pooling("last")
    assert Embedder.load(init).framing.pattern == "bidirectional"


def test_two_processes_finetune_an_encoder_decoder_whose_decoder_gets_no_gradient(tmp_path):
    init = random_body(tmp_path / "init", d_model=32, arch="encoder-decoder", objective="seq2seq")
    train = write(tmp_path / "train.jsonl", pair_rows(32, 0))
    argv = finetune_argv(init, train, None, tmp_path / "run", 3, "--train.batch_size", "8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "triform"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command + argv, capture_output=True, text=True, env=environment, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    trained, initial = load_model(tmp_path / "run" / "model").model, load_model(init).model
    assert not torch.equal(
        trained.encoder.blocks[0].feedforward.up.weight, initial.encoder.blocks[0].feedforward.up.weight
    )
    assert torch.equal(trained.decoder.blocks[0].feedforward.up.weight, initial.decoder.blocks[0].feedforward.up.weight)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"anchor": "w1 c0s0"}, r"train.jsonl:3: no 'positive' column; found \['anchor'\]"),
        ({"anchor": "w1 c0s0", "positive": 7}, r"train.jsonl:3: 'positive' must be text, got 7"),
        ({"anchor": "w1 c0s0", "positive": "w2", "negative": ["w3"]}, r"train.jsonl:3: 'negative' must be text"),
    ],
)
def test_a_bad_pairs_file_is_one_line_naming_its_file_line_and_field(tmp_path, capsys, bad, message):
    init = random_body(tmp_path / "init", d_model=32)
    train = write(tmp_path / "train.jsonl", pair_rows(2, 0) + [bad] + pair_rows(2, 1))
    assert main(finetune_argv(init, train, None, tmp_path / "run", 2)) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith("triform finetune: error: ") and re.search(message, error), error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_scored_pair_without_a_number_is_named(tmp_path, capsys):
    init = random_body(tmp_path / "init", d_model=32)
    train = write(tmp_path / "train.jsonl", pair_rows(4, 0))
    rows = scored_rows(3, 0)
    rows[1]["score"] = "high"
    valid = write(tmp_path / "valid.jsonl", rows)
    assert main(finetune_argv(init, train, valid, tmp_path / "run", 2)) == 1
    assert "valid.jsonl:2: 'score' must be a number, got 'high'" in capsys.readouterr().err
