import json

import pytest

from triform.data.readers import DataError, DataSource, read_records


def texts(source: DataSource, parallel: bool = False):
    return [(r.text, r.target) if parallel else r.text for r in read_records(source, parallel=parallel)]


def test_plain_text_by_line_and_by_paragraph(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one line\n\nsecond\nthird\n\n\nlast\n")
    assert texts(DataSource(str(path))) == ["one line", "second", "third", "last"]
    records = list(read_records(DataSource(str(path), document="paragraph"), parallel=False))
    assert [r.text for r in records] == ["one line", "second\nthird", "last"]
    assert [r.line for r in records] == [1, 3, 7]


def test_a_folder_and_a_glob_read_every_file_in_name_order(tmp_path):
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "b.txt").write_text("b\n")
    (tmp_path / "corpus" / "a.txt").write_text("a\n")
    (tmp_path / "corpus" / "sub" / "c.txt").write_text("c\n")
    (tmp_path / "corpus" / ".hidden").write_text("hidden\n")
    assert texts(DataSource(str(tmp_path / "corpus"))) == ["a", "b", "c"]
    assert texts(DataSource(str(tmp_path / "corpus" / "*.txt"))) == ["a", "b"]


def test_jsonl_with_a_named_field_and_parallel_fields(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r) for r in [{"text": "x", "en": "hi", "de": "hallo"}, {"text": "y", "en": "a", "de": "b"}]
        )
    )
    assert texts(DataSource(str(path))) == ["x", "y"]
    assert texts(DataSource(str(path), source_field="en", target_field="de"), parallel=True) == [
        ("hi", "hallo"),
        ("a", "b"),
    ]


def test_tsv_and_csv_by_position_and_by_name(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("hello world\thallo welt\nyes\tja\n")
    assert texts(DataSource(str(tsv)), parallel=True) == [("hello world", "hallo welt"), ("yes", "ja")]
    assert texts(DataSource(str(tsv), text_field=1)) == ["hallo welt", "ja"]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('id,text\n1,"a, quoted\nmultiline cell"\n2,plain\n')
    assert texts(DataSource(str(csv_path), text_field="text")) == ["a, quoted\nmultiline cell", "plain"]


def test_a_header_row_can_be_declared_or_refused(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("en\tde\nhello\thallo\n")
    assert texts(DataSource(str(tsv), header=True), parallel=True) == [("hello", "hallo")]
    assert texts(DataSource(str(tsv), text_field="de")) == ["hallo"]
    with pytest.raises(DataError, match="column 'de' is named, but data.header is false"):
        texts(DataSource(str(tsv), text_field="de", header=False))


def test_parquet_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a b", "c"], "label": ["x", "y"]}), path)
    assert texts(DataSource(str(path))) == ["a b", "c"]
    assert texts(DataSource(str(path), source_field="text", target_field=1), parallel=True) == [
        ("a b", "x"),
        ("c", "y"),
    ]
    with pytest.raises(DataError, match=rf"{path}: no column 'body'; the file has \['text', 'label'\]"):
        texts(DataSource(str(path), text_field="body"))


def test_two_aligned_files(tmp_path):
    (tmp_path / "s.txt").write_text("one\ntwo\n")
    (tmp_path / "t.txt").write_text("eins\nzwei\n")
    assert texts(DataSource(str(tmp_path / "s.txt"), target_path=str(tmp_path / "t.txt")), parallel=True) == [
        ("one", "eins"),
        ("two", "zwei"),
    ]
    (tmp_path / "t.txt").write_text("eins\n")
    with pytest.raises(DataError, match=r"t.txt:2: ends early; .*s.txt has more lines"):
        texts(DataSource(str(tmp_path / "s.txt"), target_path=str(tmp_path / "t.txt")), parallel=True)


@pytest.mark.parametrize(
    "name, content, options, parallel, message",
    [
        ("empty.txt", "\n  \n", {}, False, r"empty.txt: no documents; the input is empty or blank"),
        (
            "bad.txt",
            b"fine\nbad \xff\xfe here\n",
            {},
            False,
            r"bad.txt:2: undecodable bytes at column 5 .*expected UTF-8",
        ),
        (
            "ragged.tsv",
            "a\tb\nc\td\te\n",
            {},
            True,
            r"ragged.tsv:2: ragged row: 3 tab-separated fields, expected 2 as on line 1",
        ),
        (
            "named.tsv",
            "en\tde\nhi\thallo\n",
            {"source_field": "en", "target_field": "fr"},
            True,
            r"named.tsv:1: no column named 'fr'; the header has \['en', 'de'\]",
        ),
        ("narrow.tsv", "only one column\n", {}, True, r"narrow.tsv:1: no column 1: the rows have 1 fields"),
        (
            "missing.jsonl",
            '{"text": "a"}\n{"body": "b"}\n',
            {},
            False,
            r"missing.jsonl:2: no field 'text'; the object has \['body'\]",
        ),
        ("broken.jsonl", '{"text": "a"}\n{"text": \n', {}, False, r"broken.jsonl:2: invalid JSON at column"),
        ("typed.jsonl", '{"text": 3}\n', {}, False, r"typed.jsonl:1: field 'text' is int, expected a string"),
        ("plain.txt", "one side\n", {}, True, r"plain.txt: plain text holds one side only"),
    ],
)
def test_bad_input_names_the_file_and_line(tmp_path, name, content, options, parallel, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message):
        texts(DataSource(str(path), **options), parallel=parallel)


def test_a_path_that_matches_nothing(tmp_path):
    with pytest.raises(DataError, match="no such file or folder, and no file matches it as a glob"):
        texts(DataSource(str(tmp_path / "nothing*.txt")))


def test_training_and_tasks_read_a_file_through_one_reader(tmp_path):
    """The same rows, lines and places, whether a file is read as documents or as a task's records."""
    from triform.data.readers import Columns, read_columns
    from triform.tasks import read_records as task_records

    path = tmp_path / "d.tsv"
    path.write_text(" text \tgenre\nfirst doc\tnews\n\t\nsecond doc\tfiction\n")  # header names are stripped
    documents = list(read_records(DataSource(str(path), text_field="text"), parallel=False))
    rows = task_records(path, ["label"], {"label": "genre"})
    assert [(r.text, r.where) for r in documents] == [(r.values["text"], r.where) for r in rows]
    assert [r.where for r in rows] == [f"{path}:2", f"{path}:4"] and rows[0].values == {
        "text": "first doc",
        "label": "news",
    }
    pairs = list(read_columns(DataSource(str(path)), Columns({"text": "genre", "target": 0}, {}, every=False)))
    assert [(r.text, r.target) for r in pairs] == [("news", "first doc"), ("fiction", "second doc")]


def test_a_ragged_row_of_a_file_with_a_header_names_the_header(tmp_path):
    path = tmp_path / "h.tsv"
    path.write_text("en\tde\nhello\thallo\nextra\tcell\there\n")
    with pytest.raises(DataError, match=r"h.tsv:3: 3 fields; the header on line 1 names 2"):
        texts(DataSource(str(path), header=True), parallel=True)
