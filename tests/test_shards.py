import json

import numpy as np
import pytest
from training_helpers import sentences, write_parallel, write_text

from triform.cli import main
from triform.data import shards
from triform.data.batches import BatchOrder, PairData, WindowData, evaluation_batches
from triform.data.corpus import tokenize_records
from triform.data.readers import DataError, DataSource, read_records
from triform.data.tokenizers import save_tokenizer, train_tokenizer
from triform.vocab import SpecialTokens


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(
        sentences(300) + [w[::-1] for w in " ".join(sentences(50)).split()], "bpe", 400, n_sentinels=4, min_frequency=1
    )


def in_memory(path, tokenizer, parallel=False):
    eos = SpecialTokens.from_tokenizer(tokenizer).eos
    return tokenize_records(
        read_records(DataSource(str(path)), parallel=parallel), tokenizer, "parallel" if parallel else "text", eos
    )


def test_prepared_shards_hold_the_same_tokens_as_tokenizing_in_memory(tmp_path, tokenizer):
    corpus_path = write_text(tmp_path / "corpus.txt", 3000)
    out = shards.prepare(DataSource(str(corpus_path)), tokenizer, tmp_path / "prepared", shard_tokens=8000)
    meta = json.loads((out / "meta.json").read_text())
    assert len(meta["shards"]) == 3 and meta["dtype"] == "uint16" and meta["documents"] == 3000
    prepared = shards.load_prepared(out, tokenizer, parallel=False)
    assert isinstance(prepared.shards[0].documents.tokens, np.memmap)
    memory = in_memory(corpus_path, tokenizer)
    joined = np.concatenate([s.documents.tokens for s in prepared.shards])
    assert np.array_equal(joined, memory.shards[0].documents.tokens)
    eos = SpecialTokens.from_tokenizer(tokenizer).eos
    assert int(memory.shards[0].documents.document(0)[-1]) == eos  # every document ends with [EOS]


def test_an_interrupted_prepare_continues_where_it_stopped(tmp_path, tokenizer, monkeypatch):
    corpus_path = write_text(tmp_path / "corpus.txt", 3000)
    source = DataSource(str(corpus_path))
    reference = shards.prepare(source, tokenizer, tmp_path / "reference", shard_tokens=8000)
    original, calls = shards.commit, []

    def commit_then_interrupt(*args):
        original(*args)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(shards, "commit", commit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        shards.prepare(source, tokenizer, tmp_path / "out", shard_tokens=8000)
    assert not (tmp_path / "out").exists() and (tmp_path / ".out.partial").is_dir()
    monkeypatch.setattr(shards, "commit", original)
    out = shards.prepare(source, tokenizer, tmp_path / "out", shard_tokens=8000)
    assert not (tmp_path / ".out.partial").exists()
    for name in sorted(p.name for p in reference.glob("*.npy")):
        assert np.array_equal(np.load(reference / name), np.load(out / name)), name


def test_prepare_cli_bad_input_exits_non_zero_and_leaves_nothing(tmp_path, tokenizer, capsys):
    save_tokenizer(tokenizer, tmp_path / "tok.json")
    corpus_path = tmp_path / "corpus.txt"
    corpus_path.write_bytes(b"\n".join(s.encode() for s in sentences(2000)) + b"\nbroken \xc3\x28 byte\n")
    argv = [
        "prepare",
        "--input",
        str(corpus_path),
        "--tokenizer",
        str(tmp_path / "tok.json"),
        "--output",
        str(tmp_path / "out"),
        "--shard_tokens",
        "1000",
    ]
    assert main(argv) == 1
    error = capsys.readouterr().err.splitlines()[-1]  # progress lines come before it
    assert error.startswith("triform prepare: error: ") and "corpus.txt:2001: undecodable bytes" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "tok.json"]


def test_prepared_data_refuses_another_tokenizer(tmp_path, tokenizer):
    out = shards.prepare(DataSource(str(write_text(tmp_path / "c.txt"))), tokenizer, tmp_path / "prepared")
    other = train_tokenizer(sentences(100), "wordpiece", 150, n_sentinels=2, min_frequency=1)
    with pytest.raises(DataError, match="meta.json: prepared with a different tokenizer"):
        shards.load_prepared(out, other, parallel=False)
    with pytest.raises(DataError, match="holds text data, but the objective needs parallel data"):
        shards.load_prepared(out, tokenizer, parallel=True)


def test_windows_cover_the_stream_and_predict_each_token_once(tmp_path, tokenizer):
    corpus = in_memory(write_text(tmp_path / "c.txt", 100), tokenizer)
    data = WindowData(corpus, length=17, stride=16)
    stream = corpus.shards[0].documents.tokens
    assert data.example(0) == stream[:17].tolist() and data.example(1) == stream[16:33].tolist()
    assert len(data) == (len(stream) - 1) // 16


def test_batch_order_is_a_function_of_seed_and_step(tmp_path, tokenizer):
    data = WindowData(in_memory(write_text(tmp_path / "c.txt", 200), tokenizer), length=9)
    first, second = BatchOrder(data, 4, seed=1), BatchOrder(data, 4, seed=1)
    steps = [0, 1, first.steps_per_epoch, 3]
    assert [first.indices(s).tolist() for s in steps] == [second.indices(s).tolist() for s in reversed(steps)][::-1]
    assert first.indices(0).tolist() != first.indices(first.steps_per_epoch).tolist()  # a new epoch reshuffles
    epoch = np.concatenate([first.indices(s) for s in range(first.steps_per_epoch)])
    assert len(set(epoch.tolist())) == len(epoch)


def test_pairs_too_long_for_the_model(tmp_path, tokenizer):
    path = write_parallel(tmp_path / "p.tsv", 50)
    with open(path, "a") as file:
        file.write(" ".join(["the cat"] * 30) + "\tshort\n")
    corpus = in_memory(path, tokenizer, parallel=True)
    with pytest.raises(
        DataError, match=r"p.tsv:51: too long for model.max_len 48 \(source \d+, target \d+ tokens\); set data.too_long"
    ):
        PairData(corpus, 48, "encoder-decoder")
    assert len(PairData(corpus, 48, "encoder-decoder", "skip")) == 50
    truncated = PairData(corpus, 48, "stack", "truncate")
    assert len(truncated) == 51
    assert all(len(s) + 1 + len(t) <= 48 for s, t in (truncated.example(i) for i in range(51)))


def test_bucketing_groups_similar_lengths(tmp_path, tokenizer):
    corpus = in_memory(write_parallel(tmp_path / "p.tsv", 400), tokenizer, parallel=True)
    data = PairData(corpus, 64, "encoder-decoder")

    def padding(order):
        total = 0
        for step in range(order.steps_per_epoch):
            lengths = data.lengths()[order.indices(step)]
            total += int((lengths.max() - lengths).sum())
        return total

    assert padding(BatchOrder(data, 8, 0, bucket=True)) < padding(BatchOrder(data, 8, 0)) / 2
    batches = evaluation_batches(data, 8)
    assert sorted(i for b in batches for i in b) == list(range(len(data)))


def test_parallel_data_prepares_and_keeps_where_each_pair_came_from(tmp_path, tokenizer):
    path = write_parallel(tmp_path / "p.tsv", 60)
    with open(path, "a") as file:
        file.write(" ".join(["the cat"] * 30) + "\tshort\n")
    out = shards.prepare(DataSource(str(path)), tokenizer, tmp_path / "prepared", parallel=True)
    prepared = shards.load_prepared(out, tokenizer, parallel=True)
    memory = in_memory(path, tokenizer, parallel=True)
    assert np.array_equal(prepared.shards[0].targets.tokens, memory.shards[0].targets.tokens)
    assert PairData(prepared, 48, "encoder-decoder", "skip").example(3) == PairData(
        memory, 48, "encoder-decoder", "skip"
    ).example(3)
    with pytest.raises(DataError, match=r"p.tsv:61: too long for model.max_len 48"):
        PairData(prepared, 48, "encoder-decoder")
