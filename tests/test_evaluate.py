import math

import pytest
import torch
from conftest import SPECIALS, random_ids, tiny_config

from triform.models import build_model
from triform.objectives import make_objective
from triform.train.evaluate import bleu_chrf, pseudo_perplexity, translate_ids


def teacher_forced_argmax(model, source: list[int], output: list[int], arch: str, pattern: str) -> list[int]:
    """The model's argmax after each prefix of `output`, read off one full forward pass."""
    if arch == "encoder-decoder":
        logits = model(torch.tensor([source + [SPECIALS.eos]]), torch.tensor([[SPECIALS.bos] + output]), pattern)
        return logits[0].argmax(-1).tolist()
    ids = torch.tensor([source + [SPECIALS.sep] + output])
    types = torch.tensor([[0] * (len(source) + 1) + [1] * len(output)])
    prefix = torch.tensor([len(source) + 1]) if pattern == "prefix" else None
    logits = model(ids, pattern, token_types=types, prefix_lengths=prefix)
    return logits[0, len(source) :].argmax(-1).tolist()


@pytest.mark.parametrize("arch, pattern", [("encoder-decoder", "causal"), ("stack", "prefix"), ("stack", "causal")])
def test_greedy_output_is_the_argmax_of_a_teacher_forced_pass(arch, pattern):
    model = build_model(tiny_config(arch, token_types=2 if arch == "stack" else 0)).eval()
    sources = [
        row[:length] for row, length in zip(random_ids(3, 9).tolist(), (9, 4, 6))
    ]  # uneven: padding in the batch
    outputs = translate_ids(model, sources, SPECIALS, pattern=pattern, max_new_tokens=7)
    for source, output in zip(sources, outputs):
        predicted = teacher_forced_argmax(model, source, output, arch, pattern)
        assert predicted[: len(output)] == output
        if len(output) < 7:  # it stopped because [EOS] was the argmax
            assert predicted[len(output)] == SPECIALS.eos


def test_pseudo_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    model = build_model(tiny_config("stack")).eval()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.zero_()  # every logit 0: a uniform distribution
    windows = random_ids(2, 6).tolist()
    objective = make_objective("mlm", SPECIALS, tiny_config().vocab_size)
    assert pseudo_perplexity(model, objective, windows) == pytest.approx(tiny_config().vocab_size)


def test_bleu_and_chrf_come_from_sacrebleu():
    perfect = bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert bleu_chrf(["a b c d"], ["w x y z"])["bleu"] == 0 and not math.isnan(bleu_chrf(["a"], ["a b"])["chrf"])


def test_eval_shows_its_progress_every_few_seconds_and_at_the_end(monkeypatch, capsys):
    import time as real_time

    from triform.train import evaluate as module

    clock = [100.0]
    monkeypatch.setattr(real_time, "monotonic", lambda: clock[0])  # the module's and the throttle's clock
    progress = module.EvalProgress(300)
    for seconds, done, examples in ((0.5, 1, 32), (2.5, 4, 128), (3.0, 5, 160), (6.0, 10, 300)):
        clock[0] = 100.0 + seconds
        progress(done, 10, examples)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "eval: 4/10 batches, 128/300 examples | 51 examples/s | ETA 3s",
        "eval: 10/10 batches, 300/300 examples | 50 examples/s | ETA 0s",
    ]
