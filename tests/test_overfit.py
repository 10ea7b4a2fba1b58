"""Every allowed architecture x objective x pattern learns: one small batch, loss below a tenth."""

import dataclasses

import pytest
import torch
from conftest import SPECIALS, VOCAB_SIZE, random_ids, tiny_config

from triform.models import build_model
from triform.objectives import make_objective
from triform.objectives.compat import allowed_triples

STEPS = 300


def examples_for(objective):
    texts = random_ids(4, 14).tolist()
    if objective == "seq2seq":
        return [(text, list(reversed(text))[:8]) for text in texts]
    return texts


@pytest.mark.parametrize("arch, objective, pattern", allowed_triples())
def test_loss_falls_below_a_tenth(arch, objective, pattern):
    model = build_model(tiny_config(arch))
    options = {"sentence_end_ids": (SPECIALS.sep,)} if objective == "denoise" else {}
    built = make_objective(objective, SPECIALS, VOCAB_SIZE, arch=arch, pattern=pattern, **options)
    batch = built.prepare(examples_for(objective), torch.Generator().manual_seed(0))
    trained = built.training_module(model)  # the model, or the model with modules of the objective's own
    optimizer = torch.optim.AdamW(trained.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(STEPS):
        loss = built.loss(trained(**batch.model_inputs()), batch)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < first / 10:
            break
    assert loss.item() < first / 10, f"{arch} + {objective} + {pattern}: {first:.3f} -> {loss.item():.3f}"


MODES = (("nlg", 98), ("nlu", 97), ("s2s", 99))
MIXTURES = [
    ("stack", "ul2", {}),
    ("encoder-decoder", "ul2", {}),
    ("stack", "unilm", {}),
    ("stack", "mixture", {"mix": {"clm": 1, "mlm": 1, "span": 1, "prefix-lm": 1}, "mode_tokens": True}),
    ("encoder-decoder", "mixture", {"mix": {"clm": 1, "mlm": 1, "span": 1, "prefix-lm": 1}, "mode_tokens": True}),
]


@pytest.mark.parametrize("arch, name, options", MIXTURES, ids=[f"{a}-{n}" for a, n, _ in MIXTURES])
def test_one_model_learns_every_part_of_a_mixture(arch, name, options):
    """One set of weights, one small batch per part, trained in turn: every part's loss falls below a tenth."""
    model = build_model(tiny_config(arch))
    specials = dataclasses.replace(SPECIALS, modes=MODES)
    mixture = make_objective(name, specials, VOCAB_SIZE, arch=arch, **options)
    texts = (random_ids(4, 14) % 70 + 27).tolist()  # ordinary tokens, below the mode tokens' ids
    batches = [part.prepare(texts, torch.Generator().manual_seed(0)) for part in mixture.parts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

    def losses():
        return [mixture.loss(model(**b.model_inputs()), b) for b in batches]

    first = [loss.item() for loss in losses()]
    for _ in range(STEPS):
        current = losses()
        optimizer.zero_grad()
        sum(current).backward()
        optimizer.step()
        if all(loss.item() < start / 10 for loss, start in zip(current, first)):
            break
    final = [loss.item() for loss in losses()]
    assert all(f < s / 10 for f, s in zip(final, first)), dict(zip((p.label for p in mixture.parts), final))
