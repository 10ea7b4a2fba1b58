"""Small synthetic tasks that each need their head, a sub-word tokenizer, and a short training loop."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from triform.config import ModelConfig
from triform.models import build_model
from triform.tasks import Framing, Record
from triform.vocab import SpecialTokens, special_token_strings

FILLERS = [f"f{i}" for i in range(40)]
COLOURS = ["red", "green", "blue"]
KEYS = [f"k{i}" for i in range(6)]
VALUES = [f"v{i}" for i in range(6)]  # KEYS[i] goes with VALUES[i]
ENTITIES = [f"e{i}" for i in range(6)]
SUFFIXES = ["##s", "##ed", "##ing"]
WORDS = FILLERS + COLOURS + KEYS + VALUES + ENTITIES + ["hot", "where", "mr", "in", "?", "."]

BODIES = {  # name -> (arch, pattern the task reads it with)
    "bidirectional-stack": ("stack", "bidirectional"),
    "causal-stack": ("stack", "causal"),
    "encoder-decoder": ("encoder-decoder", "causal"),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a machine shared with other work makes a second
    thread spin; imported by each task test module, it applies there only."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tokenizer() -> Tokenizer:
    """WordPiece over WORDS: "e3ed" is two sub-tokens, e3 ##ed."""
    # The special tokens of a vocabulary made before mode tokens: these tasks read none, and the
    # learning thresholds below were set on these ids.
    vocabulary = {token: i for i, token in enumerate(special_token_strings(4, modes=False))}
    for word in WORDS + SUFFIXES:
        vocabulary.setdefault(word, len(vocabulary))
    built = Tokenizer(models.WordPiece(vocabulary, unk_token="[UNK]"))
    built.pre_tokenizer = pre_tokenizers.Whitespace()
    return built


def body_and_layout(body: str, max_len: int = 48, seed: int = 0, **changes):
    arch, pattern = BODIES[body]
    tok = tokenizer()
    specials = SpecialTokens.from_tokenizer(tok)
    torch.manual_seed(seed)
    values = dict(
        arch=arch,
        vocab_size=tok.get_vocab_size(),
        d_model=64,
        n_heads=4,
        d_ff=128,
        n_layers=2,
        max_len=max_len,
        dropout=0.0,
        attention_dropout=0.0,
    )
    values.update(changes)
    return build_model(ModelConfig(**values)), Framing(arch, pattern, specials, max_len), tok


def train(task, model, records, *, steps=300, batch_size=32, lr=3e-3, seed=0):
    rng = random.Random(seed)
    features = task.encode_all(records, with_targets=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    # AdamW, clipping, warmup then linear decay to 0: as the trainer does, and BERT fine-tunes (Devlin et al. 2019, A.3)
    warmup = steps // 10
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warmup if step < warmup else (steps - step) / (steps - warmup)
    )
    model.train()
    for _ in range(steps):
        batch = task.collate(rng.sample(features, min(batch_size, len(features))))
        loss = task.loss(model(**batch.model_inputs()), batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the trainer does by default
        optimizer.step()
        schedule.step()
    return loss.item()


def records(rows: list[dict], name: str = "data.jsonl") -> list[Record]:
    return [Record(row, name, i + 1, has_lists=True) for i, row in enumerate(rows)]


def fillers(rng: random.Random, low: int, high: int) -> list[str]:
    return rng.choices(FILLERS, k=rng.randint(low, high))


def insert(rng: random.Random, words: list[str], *new: str) -> list[str]:
    at = rng.randint(0, len(words))
    return words[:at] + list(new) + words[at:]


def classify_rows(n: int, seed: int) -> list[dict]:
    """The colour word, wherever it is, is the label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        colour = rng.choice(COLOURS)
        rows.append({"text": " ".join(insert(rng, fillers(rng, 4, 10), colour)), "label": colour})
    return rows


def regression_rows(n: int, seed: int) -> list[dict]:
    """How many times "hot" occurs."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, count = fillers(rng, 4, 8), rng.randint(0, 3)
        for _ in range(count):
            words = insert(rng, words, "hot")
        rows.append({"text": " ".join(words), "label": float(count)})
    return rows


def pair_rows(n: int, seed: int) -> list[dict]:
    """ "same" when both sentences hold the same key: neither sentence alone tells."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a = rng.choice(KEYS[:3])
        b = a if rng.random() < 0.5 else rng.choice([k for k in KEYS[:3] if k != a])
        rows.append(
            {
                "text_a": " ".join(insert(rng, fillers(rng, 1, 3), a)),
                "text_b": " ".join(insert(rng, fillers(rng, 1, 3), b)),
                "label": "same" if a == b else "different",
            }
        )
    return rows


def choice_rows(n: int, seed: int) -> list[dict]:
    """The right candidate, of three, holds the value that goes with the context's key."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        key = rng.randrange(4)
        values = [key] + rng.sample([v for v in range(4) if v != key], 2)
        rng.shuffle(values)
        choices = [" ".join(insert(rng, fillers(rng, 0, 2), VALUES[v])) for v in values]
        context = " ".join(insert(rng, fillers(rng, 1, 4), KEYS[key]))
        rows.append({"context": context, "choices": choices, "label": values.index(key)})
    return rows


def qa_rows(n: int, seed: int, no_answer: float = 0.2, length: tuple[int, int] = (12, 24)) -> list[dict]:
    """ "where kA ?" is answered by "kA vX", the key and the value after it in the context; contexts
    hold two keys at random places, and a question about an absent key has no answer."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, absent = rng.sample(range(len(KEYS)), 3)
        words = fillers(rng, *length)
        words = insert(rng, words, KEYS[a], VALUES[rng.randrange(len(VALUES))])
        words = insert(rng, words, KEYS[b], VALUES[rng.randrange(len(VALUES))])
        context = " ".join(words)
        if rng.random() < no_answer:
            rows.append({"question": f"where {KEYS[absent]} ?", "context": context, "answer": ""})
            continue
        asked = rng.choice([a, b])
        index = words.index(KEYS[asked])
        start = len(" ".join(words[:index])) + (1 if index else 0)
        answer = " ".join(words[index : index + 2])
        rows.append({"question": f"where {KEYS[asked]} ?", "context": context, "answer": answer, "answer_start": start})
    return rows


def tag_rows(n: int, seed: int) -> list[dict]:
    """Entity words (one or two, with sub-word suffixes) are people after "mr" and places after "in"."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 6)):
            kind = rng.random()
            if kind < 0.5:
                tokens.append(rng.choice(FILLERS))
                tags.append("O")
                continue
            trigger, label = ("mr", "PER") if kind < 0.75 else ("in", "LOC")
            names = [rng.choice(ENTITIES) + rng.choice(["", "s", "ed", "ing"]) for _ in range(rng.randint(1, 2))]
            tokens += [trigger, *names]
            tags += ["O", f"B-{label}"] + [f"I-{label}"] * (len(names) - 1)
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def text2text_rows(n: int, seed: int) -> list[dict]:
    """Write the value of each key of the source, in order."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        keys = rng.sample(range(len(KEYS)), rng.randint(1, 2))
        words = fillers(rng, 2, 5)
        for key in keys:
            words.insert(rng.randint(0, len(words)), KEYS[key])
        ordered = [int(w[1:]) for w in words if w in KEYS]
        rows.append({"source": " ".join(words), "target": " ".join(VALUES[k] for k in ordered)})
    return rows
