"""Tiny models with real tokenizers for the text-level generation tests, trained where a learned
behaviour is the claim (a few seconds on a CPU)."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import tiny_config

from triform.explain import word_tokenizer
from triform.models import build_model
from triform.objectives import make_objective
from triform.vocab import SpecialTokens

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "my bird sang at the window", "his fish swam in a bowl"]
WORDS = "one two three four five six seven eight nine ten red green blue , . !".split()


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for these tiny models: their operations are too small to share out, and on
    cores shared with other jobs a second thread mostly waits (the tests run several times faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def word_setup(*texts: str):
    tokenizer = word_tokenizer(*(texts or [" ".join(SENTENCES + WORDS)]))
    return tokenizer, SpecialTokens.from_tokenizer(tokenizer)


def random_model(arch: str, tokenizer, **changes):
    torch.manual_seed(0)
    return build_model(tiny_config(arch, vocab_size=tokenizer.get_vocab_size(), **changes)).eval()


def train(model, objective, examples, *, steps: int, lr: float = 1e-2):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = objective.prepare(examples, generator)
        loss = objective.loss(model(**batch.model_inputs()), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@functools.lru_cache(maxsize=1)
def trained_masked_lm():
    """A stack that learned SENTENCES with mlm (40 % masked, so that it also fills several masks)."""
    tokenizer, specials = word_setup(*SENTENCES)
    model = random_model("stack", tokenizer)
    objective = make_objective("mlm", specials, tokenizer.get_vocab_size(), rate=0.4)
    data = [tokenizer.encode(s, add_special_tokens=False).ids for s in SENTENCES] * 8
    return train(model, objective, data, steps=120), tokenizer, specials
