import pytest
from training_helpers import sentences, write_text

from triform.cli import main
from triform.data.tokenizers import load_tokenizer, save_tokenizer, train_tokenizer
from triform.errors import TriformError
from triform.vocab import SpecialTokens, sentence_end_ids, special_token_strings, tokenizer_kind, word_start_table

TEXT = sentences(300)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_each_kind_trains_with_the_special_tokens_first_and_round_trips(kind, tmp_path):
    tokenizer = train_tokenizer(TEXT, kind, 200, n_sentinels=4, min_frequency=1)
    assert tokenizer_kind(tokenizer) == kind
    vocabulary = tokenizer.get_vocab(with_added_tokens=True)
    assert [vocabulary[t] for t in special_token_strings(4)] == list(range(7 + 4 + 3))  # mode tokens last
    specials = SpecialTokens.from_tokenizer(tokenizer)
    assert specials.mask == 4 and len(specials.sentinels) == 4
    assert dict(specials.modes) == {"nlu": 11, "nlg": 12, "s2s": 13}
    text = "The big cat sat on a mat near the old house."
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert not set(ids) & specials.all_ids  # no special token is added by the tokenizer itself
    assert tokenizer.decode(ids) == text
    save_tokenizer(tokenizer, tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json").encode(text).ids == ids


@pytest.mark.parametrize("kind, prefix", [("bpe", "Ġ"), ("wordpiece", "##"), ("unigram", "▁")])
def test_word_starts_follow_each_models_marker(kind, prefix):
    tokenizer = train_tokenizer(TEXT, kind, 200, n_sentinels=2, min_frequency=1)
    table = word_start_table(tokenizer)
    for token, index in tokenizer.get_vocab().items():
        if index < len(special_token_strings(2)):
            assert table[index]
        elif kind == "wordpiece":
            assert table[index] == (not token.startswith(prefix))
        else:
            assert table[index] == token.startswith(prefix)
    assert tokenizer.token_to_id(".") in sentence_end_ids(tokenizer) or tokenizer.token_to_id("▁.") in sentence_end_ids(
        tokenizer
    )


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(TriformError, match="tokenizer.vocab_size: 50 leaves no room"):
        train_tokenizer(TEXT, "bpe", 50)


def test_a_file_that_is_not_a_tokenizer_names_itself(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(TriformError, match=f"{bad}: not a tokenizers JSON file"):
        load_tokenizer(bad)
    with pytest.raises(TriformError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "missing.json")


def test_tokenizer_cli_trains_and_encodes(tmp_path, capsys):
    corpus = write_text(tmp_path / "corpus.txt")
    output = tmp_path / "tok.json"
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(corpus),
                "--kind",
                "wordpiece",
                "--vocab_size",
                "150",
                "--min_frequency",
                "1",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert main(["tokenizer", "encode", "--tokenizer", str(output), "--text", "The cat sat."]) == 0
    out = capsys.readouterr().out
    assert "tokens:" in out and "decoded: The cat sat." in out
    assert main(["tokenizer", "encode", "--tokenizer", str(output), "The cat sat."]) == 0  # as generate takes it
    assert capsys.readouterr().out == out
    assert main(["tokenizer", "encode", "--tokenizer", str(output), "a", "--text", "b"]) == 1
    assert "as an argument or with --text, once" in capsys.readouterr().err


def test_tokenizer_train_refuses_an_output_it_cannot_write_before_training(tmp_path, capsys):
    (tmp_path / "a-file").write_text("kept")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat\n" * 20)
    output = tmp_path / "a-file" / "tok.json"
    assert main(["tokenizer", "train", "--input", str(corpus), "--output", str(output)]) == 1
    assert f"--output {output}: cannot be written" in capsys.readouterr().err


def test_tokenizer_cli_on_an_empty_corpus_fails_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    output = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--input", str(tmp_path / "empty.txt"), "--output", str(output)]) == 1
    assert "no documents" in capsys.readouterr().err
    assert not output.exists()
