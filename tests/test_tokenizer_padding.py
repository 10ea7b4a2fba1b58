"""A tokenizer.json saved with padding and truncation switched on, as many sentence-embedding exports
ship it: triform pads and truncates by itself, so every encode path (import, load, fine-tuning,
prediction, generation prompts, QA offsets, embeddings, corpora) sees the real text only, and
converting the folder back to Hugging Face keeps the user's own setting."""

from __future__ import annotations

import json

import pytest
import torch
from hf_models import single_thread, tiny, transformers  # noqa: F401
from hf_tokenizers import byte_level_folder, wordpiece_folder
from task_data import body_and_layout, classify_rows, qa_rows, records
from task_data import tokenizer as task_tokenizer
from test_finetune_cli import finetune, write
from tokenizers import Tokenizer

from triform.checkpoint import load_model
from triform.cli import main
from triform.convert import convert_from_hf, convert_to_hf, import_hf
from triform.data.corpus import tokenize_records
from triform.data.readers import DataSource, read_records
from triform.data.tokenizers import load_tokenizer
from triform.generate import TextGenerator
from triform.tasks import make_task
from triform.tasks.embed import Embedder
from triform.vocab import unpadded

FIXED = 40  # ids every text is padded and truncated to, as a sentence-transformers export writes it
SHORT = "the quick brown fox"
LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)  # more than FIXED ids


def switch_on(tokenizer: Tokenizer, pad_token: str) -> Tokenizer:
    tokenizer.enable_padding(length=FIXED, pad_id=tokenizer.token_to_id(pad_token), pad_token=pad_token)
    tokenizer.enable_truncation(max_length=FIXED)
    return tokenizer


def padded_folder(folder, family: str):
    """A Hugging Face folder of a tiny model whose tokenizer.json pads and truncates to FIXED ids."""
    vocabulary = tmp = folder.parent / f"{folder.name}-vocabulary"
    if family == "bert":
        wordpiece_folder(vocabulary)
    else:
        byte_level_folder(vocabulary, "gpt2")
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp)
    reference_tokenizer.save_pretrained(folder)
    model = tiny(family)
    model.resize_token_embeddings(len(reference_tokenizer))
    model.save_pretrained(folder)
    pad = "[PAD]" if family == "bert" else "<|endoftext|>"
    switch_on(Tokenizer.from_file(str(folder / "tokenizer.json")), pad).save(str(folder / "tokenizer.json"))
    return folder, model


def settings(path) -> tuple:
    document = json.loads(path.read_text())
    return document["padding"], document["truncation"]


def test_unpadded_switches_a_copy_off_and_leaves_a_plain_tokenizer_as_it_is(tmp_path):
    plain = task_tokenizer()
    assert unpadded(plain) is plain
    padded = switch_on(task_tokenizer(), "[PAD]")
    copy = unpadded(padded)
    assert copy.padding is None and copy.truncation is None
    assert padded.padding is not None and len(padded.encode("f1 f2").ids) == FIXED  # the caller's, untouched
    assert copy.encode("f1 f2").ids == plain.encode("f1 f2").ids
    padded.save(str(tmp_path / "tokenizer.json"))  # `triform tokenizer encode` and training read it so
    assert load_tokenizer(tmp_path / "tokenizer.json").encode("f1 f2").ids == plain.encode("f1 f2").ids


def test_import_load_and_export_keep_the_real_text_and_the_users_setting(tmp_path):
    folder, _ = padded_folder(tmp_path / "hf", "bert")
    original = settings(folder / "tokenizer.json")
    assert original[0]["strategy"] == {"Fixed": FIXED} and original[1]["max_length"] == FIXED
    as_saved = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert len(as_saved.encode(SHORT).ids) == len(as_saved.encode(LONG).ids) == FIXED  # what the file does
    real_short, real_long = (len(unpadded(as_saved).encode(text).ids) for text in (SHORT, LONG))
    assert real_short < FIXED < real_long

    imported = import_hf(folder).tokenizer
    assert [len(imported.encode(text).ids) for text in (SHORT, LONG)] == [real_short, real_long]
    convert_from_hf(folder, tmp_path / "triform")
    assert settings(tmp_path / "triform" / "tokenizer.json") == (None, None)
    loaded = load_model(tmp_path / "triform").tokenizer
    assert [len(loaded.encode(text).ids) for text in (SHORT, LONG)] == [real_short, real_long]

    convert_to_hf(tmp_path / "triform", tmp_path / "back")
    assert settings(tmp_path / "back" / "tokenizer.json") == original
    backend = transformers.AutoTokenizer.from_pretrained(tmp_path / "back").backend_tokenizer
    assert backend.padding["length"] == FIXED and backend.truncation["max_length"] == FIXED


def test_an_imported_sentence_encoder_embeds_the_real_tokens_only(tmp_path):
    folder, reference = padded_folder(tmp_path / "hf", "bert")
    pooling = folder / "1_Pooling"
    pooling.mkdir()
    (pooling / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    convert_from_hf(folder, tmp_path / "triform")
    texts = [SHORT, "a lazy dog", LONG[:120]]
    ours = Embedder.load(tmp_path / "triform").embed(texts)
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)  # pads only when asked
    with torch.no_grad():
        for text, vector in zip(texts, ours):
            ids = torch.tensor([their_tokenizer(text)["input_ids"]])
            assert ids.shape[1] < FIXED
            states = reference.bert(input_ids=ids).last_hidden_state[0]
            torch.testing.assert_close(vector, states.mean(0), atol=1e-4, rtol=0)


def test_fine_tuning_and_prediction_on_an_imported_folder_read_the_real_text(tmp_path):
    folder, _ = padded_folder(tmp_path / "hf", "bert")
    assert main(["convert", "--from-hf", str(folder), "--out", str(tmp_path / "imported")]) == 0
    train = write(tmp_path / "train.jsonl", classify_rows(48, seed=1))
    assert finetune("classify", str(tmp_path / "imported"), train, train, tmp_path / "run", 3, "--max_len", "32") == 0
    assert settings(tmp_path / "run" / "model" / "tokenizer.json") == (None, None)
    out = tmp_path / "predictions.jsonl"
    test = write(tmp_path / "test.jsonl", classify_rows(4, seed=2))
    assert main(["predict", "--model", str(tmp_path / "run" / "model"), "--data", test, "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4


def encoded(name: str, framing, tokenizer, rows, **options):
    task = make_task(name, framing, tokenizer, **options)
    task.fit(rows)
    return task.encode_all(rows, with_targets=True)


def test_tasks_encode_with_a_padding_tokenizer_as_with_a_plain_one():
    _, framing, plain = body_and_layout("bidirectional-stack", max_len=64)
    padded = switch_on(task_tokenizer(), "[PAD]")
    rows = records(classify_rows(6, seed=3))
    features = [encoded("classify", framing, tok, rows) for tok in (plain, padded)]
    assert [f.rows[0].ids for f in features[0]] == [f.rows[0].ids for f in features[1]]
    assert all(len(f.rows[0].ids) < FIXED for f in features[1])
    # QA: a context longer than the file's truncation keeps its answer, and offsets map it back.
    qa = records(qa_rows(6, seed=4, no_answer=0.0, length=(40, 50)))
    windows = [encoded("qa", framing, tok, qa, stride=8) for tok in (plain, padded)]
    assert [(f.rows[0].ids, f.target) for f in windows[0]] == [(f.rows[0].ids, f.target) for f in windows[1]]
    assert any(f.target[0] != f.info["null"] for f in windows[1])


def test_generation_prompts_and_corpora_see_the_real_text(tmp_path):
    folder, _ = padded_folder(tmp_path / "hf", "gpt2")
    pretrained = import_hf(folder)
    plain = unpadded(Tokenizer.from_file(str(folder / "tokenizer.json")))
    padded = Tokenizer.from_file(str(folder / "tokenizer.json"))
    generator = TextGenerator(pretrained.model, padded, pretrained.specials)
    assert generator.encode(SHORT) == plain.encode(SHORT).ids and len(generator.encode(LONG)) > FIXED
    reference = TextGenerator(pretrained.model, plain, pretrained.specials)
    options = dict(max_new_tokens=5, precision="fp32")
    assert generator.generate(SHORT, **options).ids == reference.generate(SHORT, **options).ids
    (tmp_path / "corpus.txt").write_text(f"{SHORT}\n{LONG}\n")
    eos = pretrained.specials.eos
    corpora = [
        tokenize_records(read_records(DataSource(str(tmp_path / "corpus.txt")), parallel=False), tok, "text", eos)
        for tok in (plain, padded)
    ]
    assert corpora[1].n_tokens == corpora[0].n_tokens > FIXED


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_from_pretrained_on_the_hugging_face_folder_itself(tmp_path, family):
    import triform

    folder, _ = padded_folder(tmp_path / "hf", family)
    loaded = triform.from_pretrained(folder)
    assert len(loaded.tokenizer.encode(SHORT).ids) < FIXED
