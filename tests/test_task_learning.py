"""Each head learns, well above chance, a small task that needs it, on a bidirectional stack, a
causal stack and an encoder-decoder, all randomly initialised (tests/task_data.py makes the data)."""

import pytest
from task_data import (  # noqa: F401 (one_thread: an autouse fixture)
    BODIES,
    body_and_layout,
    choice_rows,
    classify_rows,
    one_thread,
    pair_rows,
    qa_rows,
    records,
    regression_rows,
    tag_rows,
    text2text_rows,
    train,
)

from triform.tasks import Framing, make_task

# case -> (task, rows, options, max_len, steps, batch size, learning rate, metric, at least, chance)
CASES = {
    # one colour word among fillers decides: chance (majority class) ~ 0.36
    "classify": ("classify", classify_rows, {}, 48, 100, 32, 3e-3, "accuracy", 0.9, 0.36),
    # counting a word: a constant prediction correlates 0
    "regression": ("classify", regression_rows, {"regression": True}, 48, 150, 32, 3e-3, "pearson", 0.9, 0.0),
    # same key in both sentences or not: chance 0.5, and neither sentence alone tells
    "pair": ("pair", pair_rows, {}, 48, 500, 32, 1e-3, "accuracy", 0.75, 0.5),
    # the candidate whose value goes with the context's key, among 3: chance 0.33
    "choice": ("choice", choice_rows, {}, 48, 500, 16, 1e-3, "accuracy", 0.8, 0.33),
    # a two-word span after the asked key, anywhere in contexts longer than a window; "no answer"
    # for an absent key; always answering nothing scores 20, a random span ~ 0
    "qa": ("qa", qa_rows, {}, 24, 500, 32, 1e-3, "exact_match", 50.0, 20.0),
    # people after "mr", places after "in", words of one to three sub-tokens: all-O scores 0
    "tag": ("tag", tag_rows, {}, 48, 150, 32, 3e-3, "f1", 0.8, 0.0),
}


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("case", list(CASES))
def test_each_head_learns_its_task_on_every_body(case, body):
    name, make_rows, options, max_len, steps, batch_size, lr, metric, at_least, chance = CASES[case]
    model, layout, tok = body_and_layout(body, max_len=max_len)
    task = make_task(name, layout, tok, **options)
    training, held_out = records(make_rows(1000, seed=1)), records(make_rows(200, seed=2))
    task.fit(training)
    model = task.build_model(model)
    train(task, model, training, steps=steps, batch_size=batch_size, lr=lr)
    score = task.metrics_of(task.predict(model, held_out), held_out)[metric]
    assert score >= at_least > chance, f"{case} on a {body}: {metric} {score:.3f} (chance {chance})"


@pytest.mark.parametrize("arch, pattern", [("encoder-decoder", "causal"), ("stack", "prefix")])
def test_text_to_text_learns_to_write_the_answer(arch, pattern):
    body = "encoder-decoder" if arch == "encoder-decoder" else "causal-stack"
    model, layout, tok = body_and_layout(body, max_len=32)
    task = make_task("text2text", Framing(arch, pattern, layout.specials, 32), tok)
    training, held_out = records(text2text_rows(1000, seed=1)), records(text2text_rows(100, seed=2))
    task.fit(training)
    model = task.build_model(model)
    train(task, model, training, steps=400, lr=1e-3)
    predictions = task.predict(model, held_out)
    assert task.metrics_of(predictions, held_out)["exact_match"] >= 80.0, predictions[:5]
