"""The demo's generated task and its real-language corpus."""

from __future__ import annotations

import pytest

from triform.demo.docstrings import docstring_sentences, prose_sentences, split_by_module
from triform.demo.numbers import english, german, number_pairs
from triform.errors import TriformError


@pytest.mark.parametrize(
    ("number", "in_english", "in_german"),
    [
        (0, "zero", "null"),
        (1, "one", "eins"),
        (16, "sixteen", "sechzehn"),
        (17, "seventeen", "siebzehn"),
        (21, "twenty-one", "einundzwanzig"),
        (30, "thirty", "dreißig"),
        (101, "one hundred one", "einhunderteins"),
        (1000, "one thousand", "eintausend"),
        (1001, "one thousand one", "eintausendeins"),
        (21_000, "twenty-one thousand", "einundzwanzigtausend"),
        (342_017, "three hundred forty-two thousand seventeen", "dreihundertzweiundvierzigtausendsiebzehn"),
        (
            999_999,
            "nine hundred ninety-nine thousand nine hundred ninety-nine",
            "neunhundertneunundneunzigtausendneunhundertneunundneunzig",
        ),
    ],
)
def test_numbers_are_spelled_as_each_language_writes_them(number, in_english, in_german):
    assert english(number) == in_english
    assert german(number) == in_german


def test_numbers_out_of_range_are_refused():
    with pytest.raises(ValueError, match="1,000,000"):
        german(1_000_000)
    with pytest.raises(ValueError):
        english(-1)


def test_number_pairs_are_distinct_and_leave_out_the_excluded():
    train = number_pairs(500, limit=1000, seed=0)
    held_out = number_pairs(100, limit=1000, seed=1, exclude={n for n, _, _ in train})
    numbers = [n for n, _, _ in train]
    assert len(set(numbers)) == 500 and all(0 <= n < 1000 for n in numbers)
    assert not {n for n, _, _ in held_out} & set(numbers)
    assert number_pairs(5000, limit=1000) and len(number_pairs(5000, limit=1000)) == 1000  # all there are
    assert number_pairs(50, seed=3) == number_pairs(50, seed=3)


def test_prose_is_kept_and_code_is_not():
    docstring = """Return the absolute value of the argument.

    >>> abs(-1)
    1

Parameters are checked first. x = f(y) + g[z] ** 2 is not prose.
  indented text is a block.
"""
    assert prose_sentences(docstring) == ["Return the absolute value of the argument."]


def test_docstrings_of_a_library_split_by_module(tmp_path):
    (tmp_path / "alpha.py").write_text(
        '"""The alpha module reads files from disk."""\n\ndef f():\n    """Return the first line of the file."""\n'
    )
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_alpha.py").write_text('"""Tests are not part of the corpus at all."""\n')
    (tmp_path / "broken.py").write_text("def (:\n")
    found = docstring_sentences(tmp_path, limit=2)
    assert found == [
        ("alpha.py", "The alpha module reads files from disk."),
        ("alpha.py", "Return the first line of the file."),
    ]
    modules = found + [(f"m{i}.py", f"Module number {i} says this here.") for i in range(20)]
    train, valid = split_by_module(modules, valid_fraction=0.5)
    assert sorted(train + valid) == sorted(s for _, s in modules)
    assert train and valid  # 21 modules: both sides get some
    for module in {m for m, _ in modules}:  # a module's sentences all go one way
        mine = {s for m, s in modules if m == module}
        assert mine <= set(train) or mine <= set(valid)


def test_a_library_without_docstrings_is_a_clear_error(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(TriformError, match="--data"):
        docstring_sentences(tmp_path)


def test_this_pythons_standard_library_gives_enough_sentences():
    found = docstring_sentences(limit=600)
    assert len(found) >= 600
    assert all(sentence[0].isupper() and sentence[-1] in ".!?" for _, sentence in found)


def test_a_users_documents_are_split_every_twentieth_held_out():
    from triform.demo.data import split_every

    documents = [f"document {i}" for i in range(45)]
    train, valid = split_every(documents, "corpus.txt", "the demo")
    assert valid == ["document 19", "document 39"]
    assert len(train) == 43 and not set(train) & set(valid)
    with pytest.raises(TriformError, match="corpus.txt holds 39 documents; the demo needs at least 40"):
        split_every(documents[:39], "corpus.txt", "the demo")
