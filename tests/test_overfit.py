"""Every allowed architecture x objective x pattern learns: one small batch, loss below a tenth."""

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
