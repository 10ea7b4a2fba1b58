"""What each trained demo model does: continuations, filled masks, translations, with the figures
that say it learned (perplexity against the uniform guess, masked-token accuracy, exact matches)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from triform.demo.data import NumberData, TextData
from triform.demo.plan import DemoModel
from triform.demo.runs import last_validation
from triform.generate import TextGenerator
from triform.objectives import make_objective
from triform.pictures import display_names, draw_batch

DOCSTRING_PROMPTS = ("Return the", "If the file", "This module provides", "The default is", "Raise an exception if")
N_FILLS, N_TRANSLATIONS = 6, 8


@dataclass
class Outcome:
    model: DemoModel
    run_dir: Path
    records: list[dict]
    metrics: dict = field(default_factory=dict)  # name -> value; "learned" figures first
    examples: list[dict] = field(default_factory=list)
    picture: Path | None = None

    @property
    def seconds(self) -> float:
        train = [r for r in self.records if r.get("split") == "train"]
        return train[-1]["elapsed_s"] if train else 0.0


def load(outcome: Outcome) -> TextGenerator:
    return TextGenerator.load(outcome.run_dir / "model")


def language_metrics(outcome: Outcome, vocab_size: int) -> dict:
    valid = last_validation(outcome.records)
    metrics = {"validation loss": valid["loss"], "perplexity": valid["perplexity"], "uniform perplexity": vocab_size}
    if outcome.model.objective == "mlm":
        metrics["masked-token accuracy"] = valid["accuracy"]
    else:
        metrics["next-token accuracy"] = valid["accuracy"]
    return metrics


def continuations(generator: TextGenerator, text: TextData, from_docstrings: bool) -> list[dict]:
    prompts = list(DOCSTRING_PROMPTS) if from_docstrings else [" ".join(t.split()[:4]) for t in text.valid_texts[:5]]
    greedy = generator.generate(prompts, max_new_tokens=16)
    sampled = generator.generate(prompts, max_new_tokens=16, do_sample=True, top_p=0.9, temperature=0.8, seed=0)
    return [{"prompt": p, "greedy": g.text.strip(), "sampled": s.text.strip()} for p, g, s in zip(prompts, greedy, sampled)]


def masked_sentences(tokenizer, texts: list[str], max_tokens: int, n: int = N_FILLS) -> list[tuple[str, str]]:
    """(text with one [MASK], the word it hides) for up to `n` short held-out sentences; the hidden
    word is a whole word of 4 letters or more that the tokenizer keeps as one token."""
    chosen = []
    for text in texts:
        words = text.split()
        if not 5 <= len(words) <= 16 or len(tokenizer.encode(text, add_special_tokens=False).ids) > max_tokens:
            continue
        candidates = [i for i in range(1, len(words)) if words[i].isalpha() and len(words[i]) >= 4
                      and len(tokenizer.encode(" " + words[i], add_special_tokens=False).ids) == 1]  # fmt: skip
        if candidates:
            i = candidates[len(candidates) // 2]
            chosen.append((" ".join(words[:i] + ["[MASK]"] + words[i + 1 :]), words[i]))
        if len(chosen) == n:
            break
    return chosen


def fills(generator: TextGenerator, masked: list[tuple[str, str]]) -> list[dict]:
    if not masked:
        return []
    results = generator.fill_mask([text for text, _ in masked], top_k=3)
    rows = []
    for (text, answer), (candidates,) in zip(masked, results):
        shown = [(generator.tokenizer.decode([c.id]).strip(), c.probability) for c in candidates]
        rows.append({"text": text, "answer": answer, "top": shown, "correct": shown[0][0] == answer})
    return rows


def translations(generator: TextGenerator, numbers: NumberData) -> tuple[list[dict], float]:
    """Greedy translations of every held-out number; (the first few as examples, exact-match rate)."""
    outputs = generator.generate([english for _, english, _ in numbers.valid_pairs], max_new_tokens=48)
    rows = [{"number": n, "english": e, "output": o.text.strip(), "reference": g, "correct": o.text.strip() == g}
            for (n, e, g), o in zip(numbers.valid_pairs, outputs)]  # fmt: skip
    return rows[:N_TRANSLATIONS], sum(r["correct"] for r in rows) / max(len(rows), 1)


def picture(outcome: Outcome, generator: TextGenerator, example, path: Path) -> Path:
    """The model's input, target and attention pattern for one example, as its objective lays it out."""
    model = outcome.model
    objective = make_objective(model.objective, generator.specials, generator.model.config.vocab_size,
                               arch=model.arch, pattern=model.pattern)  # fmt: skip
    generator_seed = torch.Generator().manual_seed(3)
    batch = objective.prepare([example], generator_seed)
    return draw_batch(batch, display_names(generator.tokenizer), path, title=f"{model.family}: {model.triple}")


def short_example(generator: TextGenerator, texts: list[str], longest: int = 14) -> list[int]:
    for text in texts:
        ids = generator.encode(text)
        if 6 <= len(ids) <= longest:
            return ids
    return generator.encode(texts[0])[:longest]


def showcase(outcome: Outcome, text: TextData | None, numbers: NumberData | None, folder: Path, *,
             from_docstrings: bool) -> Outcome:  # fmt: skip
    """Fill in the outcome's metrics, examples and picture."""
    generator = load(outcome)
    model = outcome.model
    vocab_size = generator.model.config.vocab_size
    if model.data == "numbers":
        outcome.examples, exact = translations(generator, numbers)
        valid = last_validation(outcome.records)
        outcome.metrics = {"exact-match accuracy": exact, "token accuracy": valid["accuracy"], "perplexity": valid["perplexity"],
                           "uniform perplexity": vocab_size}  # fmt: skip
        _, english, german = numbers.valid_pairs[0]
        example = (generator.encode(english), generator.encode(german))
    else:
        outcome.metrics = language_metrics(outcome, vocab_size)
        if model.objective == "mlm":
            outcome.examples = fills(generator, masked_sentences(generator.tokenizer, text.valid_texts, generator.model.config.max_len - 2))
        else:
            outcome.examples = continuations(generator, text, from_docstrings)
        example = short_example(generator, text.valid_texts)
    outcome.picture = picture(outcome, generator, example, folder / f"{model.key}-attention.png")
    return outcome


def learned(outcome: Outcome) -> bool:
    """A coarse check that the model learned its task: far better than guessing."""
    metrics = outcome.metrics
    if "exact-match accuracy" in metrics:
        return metrics["exact-match accuracy"] >= 0.5
    # Masked tokens are the hard ones of a text (15 % drawn at random, no left-to-right context),
    # so a masked LM's perplexity is held to half the uniform guess, a causal LM's to a quarter.
    share = 2 if "masked-token accuracy" in metrics else 4
    return metrics["perplexity"] < metrics["uniform perplexity"] / share and not math.isnan(metrics["validation loss"])
