"""How tasks lay out, pool, window and align their inputs, on every kind of body."""

import pytest
import torch
from task_data import BODIES, body_and_layout, one_thread, records  # noqa: F401 (one_thread: an autouse fixture)

from triform.errors import TriformError
from triform.models import StackInputs
from triform.objectives.batch import IGNORE
from triform.tasks import Framing, make_task
from triform.tasks.framing import truncate_longest_first
from triform.tasks.qa import best_span_of, windows
from triform.vocab import SpecialTokens


def test_hidden_states_are_what_the_output_head_reads():
    for body in BODIES:
        model, _, _ = body_and_layout(body)
        ids = torch.randint(20, 60, (2, 7))
        if model.arch == "stack":
            expected = model(ids, "causal")
            hidden = model.hidden_states(StackInputs(ids, "causal"))
        else:
            expected = model(ids, ids)
            hidden = model.hidden_states(ids, StackInputs(ids))
        assert hidden.shape == (2, 7, model.config.d_model)
        torch.testing.assert_close(model.head(hidden), expected)


def test_layouts_follow_bert_gpt1_and_bart():
    _, bert, tok = body_and_layout("bidirectional-stack")
    s = bert.specials
    row = bert.join([30, 31], [40])
    assert (
        row.ids == [s.cls, 30, 31, s.sep, 40, s.sep] and row.token_types == [0, 0, 0, 0, 1, 1] and row.starts == [1, 4]
    )
    for body in ("causal-stack", "encoder-decoder"):
        _, layout, _ = body_and_layout(body)
        assert layout.join([30, 31], [40]).ids == [s.bos, 30, 31, s.sep, 40, s.eos] and not layout.pools_first
    assert bert.strip(row.ids) == [30, 31, s.sep, 40]
    # GPT-2's vocabulary has no delimiter: its one special token, [EOS], delimits
    gpt2 = Framing("stack", "causal", SpecialTokens(bos=5, eos=5, pad=5), max_len=16)
    assert gpt2.join([30, 31], [40]).ids == [5, 30, 31, 5, 40, 5]
    with pytest.raises(TriformError, match="a task framing needs a cls token"):
        Framing("stack", "bidirectional", SpecialTokens(bos=5, eos=5, pad=5), max_len=16)


def test_truncation_drops_from_the_longest_part_first():
    assert truncate_longest_first([list(range(10)), list(range(3))], 8) == [list(range(5)), list(range(3))]
    assert [len(p) for p in truncate_longest_first([list(range(10)), list(range(9))], 8)] == [4, 4]
    _, layout, _ = body_and_layout("bidirectional-stack", max_len=10)
    assert len(layout.join(list(range(30, 50)), list(range(60, 70))).ids) == 10


def test_a_prefix_pattern_is_only_for_text_to_text():
    _, layout, tok = body_and_layout("causal-stack")
    prefix = Framing("stack", "prefix", layout.specials, 32)
    with pytest.raises(
        ValueError, match="the classify task reads a stack with one of the patterns bidirectional, causal, not prefix"
    ):
        make_task("classify", prefix, tok)
    make_task("text2text", prefix, tok)
    with pytest.raises(ValueError, match="encoder-decoder is read through its causal decoder"):
        Framing("encoder-decoder", "bidirectional", layout.specials, 32)


@pytest.mark.parametrize("body", list(BODIES))
def test_pooled_scores_ignore_padding(body):
    """A sequence scores the same alone and right-padded beside a longer one: the summary is the
    first token or the last real one, never a pad."""
    model, layout, tok = body_and_layout(body)
    task = make_task("classify", layout, tok)
    rows = records([{"text": "f1 red f2", "label": "red"}, {"text": "f3 f4 f5 f6 f7 blue f8", "label": "blue"}])
    task.fit(rows)
    model = task.build_model(model).eval()
    together = model(**task.collate(task.encode_all(rows, True)).model_inputs())
    alone = model(**task.collate(task.encode_all(rows[:1], True)).model_inputs())
    assert task.collate(task.encode_all(rows, True)).padding_mask is not None
    torch.testing.assert_close(together[:1], alone)


def test_a_pair_on_a_causal_stack_is_read_in_both_orders_and_scores_symmetrically():
    model, layout, tok = body_and_layout("causal-stack")
    task = make_task("pair", layout, tok)
    rows = records(
        [
            {"text_a": "f1 k0", "text_b": "k1 f2 f3", "label": "x"},
            {"text_a": "k1 f2 f3", "text_b": "f1 k0", "label": "y"},
        ]
    )
    task.fit(rows)
    first = task.encode(rows[0], 0, True)[0]
    assert len(first.rows) == 2 and first.rows[0].ids != first.rows[1].ids
    model = task.build_model(model).eval()
    scores = model(**task.collate(task.encode_all(rows, True)).model_inputs())
    torch.testing.assert_close(scores[0], scores[1])  # swapping the texts changes nothing
    _, bert, _ = body_and_layout("bidirectional-stack")
    assert len(make_task("pair", bert, tok, labels=["x", "y"]).encode(rows[0], 0, False)[0].rows) == 1
    assert make_task("pair", bert, tok, both_orders=True, labels=["x", "y"]).state()["both_orders"] is True


def test_questions_with_different_numbers_of_choices_share_a_batch():
    model, layout, tok = body_and_layout("bidirectional-stack")
    task = make_task("choice", layout, tok)
    rows = records(
        [
            {"context": "k1 f2", "choices": ["v1", "v2"], "label": 0},
            {"context": "k2", "choices": ["v0", "v1", "v2", "v3"], "label": 2},
        ]
    )
    model = task.build_model(model)
    batch = task.collate(task.encode_all(rows, True))
    assert batch.ids.shape[0] == 6
    loss = task.loss(model(**batch.model_inputs()), batch)
    assert torch.isfinite(loss)
    predictions = task.predict(model, rows)
    assert [len(p["probabilities"]) for p in predictions] == [2, 4]
    assert sum(predictions[0]["probabilities"]) == pytest.approx(1.0)


def test_windows_cover_the_context_with_the_stride_as_overlap():
    spans = windows(50, 16, 4)
    assert spans[0] == (0, 16) and spans[-1][1] == 50
    assert all(b[0] == a[1] - 4 for a, b in zip(spans, spans[1:]))
    assert windows(10, 16, 4) == [(0, 10)]


@pytest.mark.parametrize("body", list(BODIES))
def test_long_contexts_are_windowed_and_answers_map_back_to_characters(body):
    _, layout, tok = body_and_layout(body, max_len=16)
    task = make_task("qa", layout, tok, stride=3)
    words = [f"f{i}" for i in range(30)]
    context = " ".join(words[:20] + ["k3", "v4ing"] + words[20:])
    rows = records([{"question": "where k3 ?", "context": context, "answer": "k3 v4ing"}])
    features = task.encode(rows[0], 0, True)
    assert len(features) > 3
    holding = [f for f in features if f.target[0] != f.info["null"]]
    assert holding, "some window holds the answer"
    for feature in holding:
        start, end = feature.target
        ids = feature.rows[0].ids[start : end + 1]
        assert tok.decode(ids) == "k3 v4 ##ing"
        assert layout.specials.sep not in ids and end >= start
    for feature in features:
        if feature not in holding:
            assert feature.target == (feature.info["null"], feature.info["null"])
    # Decoding: scores pointing at the answer's tokens give back its exact characters.
    feature = holding[0]
    scores = torch.zeros(len(feature.rows[0].ids), 2)
    scores[feature.target[0], 0] = scores[feature.target[1], 1] = 5.0
    decided = task.decide(rows[0], [(feature, scores)])
    assert decided["answer"] == "k3 v4ing" and context[decided["answer_start"] :].startswith("k3 v4ing")


def test_the_best_span_is_valid_and_no_answer_wins_when_its_score_is_higher():
    scores = torch.tensor([[-5.0, 6.0], [1.0, 0.0], [0.0, 2.0], [8.0, -9.0]])  # (start, end) per token
    assert best_span_of(scores, 30) == (3.0, 1, 2)  # start 3 and end 0 score 14 but are backwards
    assert best_span_of(scores, 1) == (2.0, 2, 2)  # one token at most
    _, layout, tok = body_and_layout("bidirectional-stack")
    task = make_task("qa", layout, tok, no_answer=True)
    row = records([{"question": "where k1 ?", "context": "f1 k1 v2", "answer": ""}])[0]
    (feature,) = task.encode(row, 0, True)
    assert feature.target == (0, 0)  # [CLS]
    scores = torch.zeros(len(feature.rows[0].ids), 2)
    scores[0] = 3.0
    assert task.decide(row, [(feature, scores)])["answer"] == ""
    task.no_answer = False  # trained without unanswerable questions: always a span
    assert task.decide(row, [(feature, scores)])["answer"] != ""


def test_tags_sit_on_the_first_sub_token_of_each_word():
    model, layout, tok = body_and_layout("bidirectional-stack")
    task = make_task("tag", layout, tok)
    rows = records([{"tokens": ["mr", "e1ing", "f2", "in", "e3ed"], "tags": ["O", "B-PER", "O", "O", "B-LOC"]}])
    task.fit(rows)
    (feature,) = task.encode(rows[0], 0, True)
    tokens = [tok.id_to_token(i) for i in feature.rows[0].ids]
    assert tokens == ["[CLS]", "mr", "e1", "##ing", "f2", "in", "e3", "##ed", "[SEP]"]
    labelled = [(tokens[i], task.labels[t]) for i, t in enumerate(feature.target) if t != IGNORE]
    assert labelled == [("mr", "O"), ("e1", "B-PER"), ("f2", "O"), ("in", "O"), ("e3", "B-LOC")]
    assert [p["tags"] for p in task.predict(task.build_model(model), rows)][0].__len__() == 5


def test_a_sentence_longer_than_the_model_is_tagged_whole():
    model, layout, tok = body_and_layout("causal-stack", max_len=10)
    task = make_task("tag", layout, tok, labels=["O", "B-PER"])
    words = [f"e{i % 6}ing" for i in range(23)]  # 46 sub-tokens for 8 slots a chunk
    rows = records([{"tokens": words, "tags": ["O"] * 23}])
    features = task.encode(rows[0], 0, True)
    assert len(features) == 6 and all(len(f.rows[0].ids) <= 10 for f in features)
    assert len(task.predict(task.build_model(model), rows)[0]["tags"]) == 23
