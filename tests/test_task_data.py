"""Reading task data, saving fine-tuned models, and the errors a user meets, each naming its line."""

import json

import pytest
import torch
from task_data import body_and_layout, one_thread, records  # noqa: F401 (one_thread: an autouse fixture)

from triform.tasks import DataError, make_task, read_records, write_jsonl
from triform.tasks.checkpoint import load_body, load_task_model, save_task_model


def test_jsonl_csv_and_tsv_give_the_same_records(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"text": "f1 \\"red\\"", "label": "red"}\n\n{"text": "f2, f3", "label": "blue"}\n'
    )
    (tmp_path / "a.csv").write_text('text,label\n"f1 ""red""",red\n"f2, f3",blue\n')
    (tmp_path / "a.tsv").write_text('text\tlabel\nf1 "red"\tred\nf2, f3\tblue\n')  # quotes are text in TSV
    values = [[r.values for r in read_records(tmp_path / f"a.{ext}", ["text"])] for ext in ("jsonl", "csv", "tsv")]
    assert (
        values[0]
        == values[1]
        == values[2]
        == [{"text": 'f1 "red"', "label": "red"}, {"text": "f2, f3", "label": "blue"}]
    )
    assert read_records(tmp_path / "a.jsonl")[1].where == f"{tmp_path / 'a.jsonl'}:3"
    assert read_records(tmp_path / "a.tsv")[1].where == f"{tmp_path / 'a.tsv'}:3"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.jsonl", '{"text": "a", "label": 1}\n{"label": 2}\n', "d.jsonl:2: no 'text' column"),
        ("d.jsonl", '{"text": "a"}\n[1, 2]\n', "d.jsonl:2: expected a JSON object"),
        ("d.jsonl", '{"text": "a"}\n{"text": \n', "d.jsonl:2: invalid JSON"),
        ("d.tsv", "text\tlabel\na\tb\nc\n", "d.tsv:3: 1 fields; the header on line 1 names 2"),
        ("d.csv", "label\nx\n", "d.csv:2: no 'text' column; found ['label']"),
        ("d.txt", "text\n", "tasks read named columns from .jsonl, .csv, .tsv or .parquet files, not text"),
    ],
)
def test_bad_files_name_the_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_records(tmp_path / name, ["text"])


def test_predictions_are_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def rows():
        yield {"label": "a"}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    write_jsonl(target, [{"label": "é"}])
    assert json.loads(target.read_text()) == {"label": "é"}


def test_record_errors_name_the_line():
    _, layout, tok = body_and_layout("bidirectional-stack")
    classify = make_task("classify", layout, tok)
    classify.fit(records([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    bad = records([{"text": "a", "label": "x"}, {"text": "b", "label": "z"}], "valid.jsonl")
    with pytest.raises(DataError, match=r"valid.jsonl:2: unknown label 'z'; the model knows \['x', 'y'\]"):
        classify.encode_all(bad, with_targets=True)
    with pytest.raises(DataError, match="data.jsonl: 1 distinct 'label' value"):
        make_task("classify", layout, tok).fit(records([{"text": "a", "label": "x"}]))
    regression = make_task("classify", layout, tok, regression=True)
    with pytest.raises(DataError, match=":1: 'label' must be a number for regression, got 'high'"):
        regression.encode_all(records([{"text": "a", "label": "high"}]), with_targets=True)

    qa = make_task("qa", layout, tok)
    with pytest.raises(DataError, match="qa.jsonl:2: answer 'v9' is not in its context"):
        qa.fit(
            records(
                [
                    {"question": "q", "context": "f1 v1", "answer": "v1"},
                    {"question": "q", "context": "f1 v1", "answer": "v9"},
                ],
                "qa.jsonl",
            )
        )
    with pytest.raises(DataError, match=":1: answer 'v1' is not at answer_start 0 of its context \\(found 'f1'\\)"):
        qa.encode_all(records([{"question": "q", "context": "f1 v1", "answer": "v1", "answer_start": 0}]), True)

    tag = make_task("tag", layout, tok, labels=["O", "B-PER"])
    with pytest.raises(DataError, match=":1: 1 tags for 2 tokens"):
        tag.encode_all(records([{"tokens": ["f1", "f2"], "tags": ["O"]}]), True)
    with pytest.raises(DataError, match=":1: unknown tag 'B-LOC'"):
        tag.encode_all(records([{"tokens": ["f1"], "tags": ["B-LOC"]}]), True)

    choice = make_task("choice", layout, tok)
    with pytest.raises(DataError, match=":1: 'label' 2 is not the index of one of the 2 choices"):
        choice.encode_all(records([{"context": "c", "choices": ["a", "b"], "label": 2}]), True)
    with pytest.raises(DataError, match=":1: 1 choice\\(s\\)"):
        choice.encode_all(records([{"context": "c", "choices": ["a"], "label": 0}]), True)


def test_csv_cells_hold_lists_and_choices(tmp_path):
    (tmp_path / "tags.tsv").write_text("tokens\ttags\nmr e1 f2\tO B-PER O\n")
    (tmp_path / "choice.csv").write_text("context,choice0,choice1,choice2,label\nk1,v0,v1,,1\n")
    _, layout, tok = body_and_layout("causal-stack")
    tag = make_task("tag", layout, tok)
    tag.fit(read_records(tmp_path / "tags.tsv"))
    assert tag.labels.values == ["B-PER", "O"]
    choice = make_task("choice", layout, tok)
    (feature,) = choice.encode(read_records(tmp_path / "choice.csv")[0], 0, True)
    assert len(feature.rows) == 2 and feature.target == 1


@pytest.mark.parametrize(
    "name, rows, options",
    [
        ("classify", [{"text": "f1 red", "label": 1}, {"text": "f2 blue", "label": 0}], {}),
        ("qa", [{"question": "where k1 ?", "context": "f1 k1 v1", "answer": "k1 v1", "id": "q7"}], {}),
        ("text2text", [{"source": "k1 f2", "target": "v1"}], {}),
    ],
)
def test_a_fine_tuned_model_folder_predicts_as_before(tmp_path, name, rows, options):
    body, layout, tok = body_and_layout("encoder-decoder")
    task = make_task(name, layout, tok, **options)
    data = records(rows)
    task.fit(data)
    model = task.build_model(body)
    before = task.predict(model, data)
    save_task_model(model, task, tmp_path / "model", extra={"note": "kept"})
    loaded, loaded_task, extra = load_task_model(tmp_path / "model")
    assert extra["note"] == "kept" and extra["task"] == task.state()
    assert loaded_task.predict(loaded, data) == before
    if name == "qa":
        assert before[0]["id"] == "q7"
    body_again, specials, tokenizer, _ = load_body(tmp_path / "model")
    assert specials == layout.specials and tokenizer.get_vocab() == tok.get_vocab()
    for key, tensor in body_again.state_dict().items():
        torch.testing.assert_close(tensor, (model.body if hasattr(model, "body") else model).state_dict()[key])


def test_a_plain_model_folder_is_not_a_fine_tuned_one(tmp_path):
    from triform.checkpoint import save_model

    body, layout, tok = body_and_layout("causal-stack")
    save_model(body, tmp_path / "plain", specials=layout.specials, tokenizer=tok)
    with pytest.raises(Exception, match="not a fine-tuned model"):
        load_task_model(tmp_path / "plain")
    assert load_body(tmp_path / "plain")[0].config == body.config


@pytest.mark.parametrize("body_name", ["bidirectional-stack", "causal-stack", "encoder-decoder"])
def test_the_auxiliary_lm_loss_adds_lambda_times_the_bodys_objective(body_name):
    body, layout, tok = body_and_layout(body_name)
    rows = records([{"text": "f1 red f2 f3", "label": "red"}, {"text": "f2 blue", "label": "blue"}])
    plain, auxiliary = make_task("classify", layout, tok), make_task("classify", layout, tok, lm_weight=0.5)
    plain.fit(rows)
    auxiliary.fit(rows)
    model = plain.build_model(body)
    features = plain.encode_all(rows, True)
    batch = auxiliary.collate(features, torch.Generator().manual_seed(0))
    assert batch.lm is not None and plain.collate(features).lm is None
    total = auxiliary.loss(model(**batch.model_inputs()), batch)
    plain_batch = plain.collate(features)
    task_only = plain.loss(model(**plain_batch.model_inputs()), plain_batch)
    lm = auxiliary.lm_objective().loss(model.body(**batch.lm.model_inputs()), batch.lm)
    torch.testing.assert_close(total, task_only + 0.5 * lm)
    assert lm.item() > 1.0  # an untrained body cannot predict its tokens
    total.backward()
    assert model.body.head.projection.weight.grad.abs().sum() > 0
    expected = "clm" if body_name == "causal-stack" else "mlm"
    assert auxiliary.lm_objective().name == expected
    with pytest.raises(ValueError, match="lm_weight: expected 0 or more"):
        make_task("classify", layout, tok, lm_weight=-1.0)
