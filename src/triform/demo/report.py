"""The demo's outputs: lines on the terminal, `report.html` with its pictures, and `demo.json`.

The HTML page references the PNG files written next to it, so the folder can be opened, copied or
served as it is, and each picture used on its own.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from triform.demo.showcase import Outcome, learned
from triform.io import atomic_write
from triform.train.plots import Curves, plot_losses

PERCENT = ("accuracy",)


def figure_text(name: str, value) -> str:
    if any(word in name for word in PERCENT):
        return f"{100 * value:.1f} %"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def headline(outcome: Outcome) -> str:
    """The figures that say the model learned, next to what a guess would score."""
    m = outcome.metrics
    if "exact-match accuracy" in m:
        return f"{figure_text('accuracy', m['exact-match accuracy'])} of held-out numbers translated exactly"
    perplexity = (
        f"perplexity {m['perplexity']:.1f} (context-free guess: {m['context-free perplexity']:.1f}, "
        f"uniform guess: {m['uniform perplexity']:,})"
    )
    name = "masked-token accuracy" if "masked-token accuracy" in m else "next-token accuracy"
    guess = figure_text("accuracy", m["context-free accuracy"])
    accuracy = f"{name} {figure_text('accuracy', m[name])} (context-free guess: {guess})"
    return f"{accuracy}, {perplexity}" if name == "masked-token accuracy" else f"{perplexity}, {accuracy}"


def example_lines(outcome: Outcome) -> list[str]:
    lines = []
    for row in outcome.examples:
        if "prompt" in row:
            lines.append(f"  {row['prompt']!r} -> {row['greedy']!r}   (sampled: {row['sampled']!r})")
        elif "top" in row:
            top = ", ".join(f"{token} {100 * p:.0f}%" for token, p in row["top"])
            lines.append(
                f"  {row['text']}\n      [MASK] = {row['answer']!r}; model: {top} {'✓' if row['correct'] else '✗'}"
            )
        else:
            lines.append(
                f"  {row['english']} -> {row['output']} {'✓' if row['correct'] else '✗ (' + row['reference'] + ')'}"
            )
    return lines


def terminal_summary(outcome: Outcome) -> str:
    return "\n".join([f"  {headline(outcome)}", *example_lines(outcome)])


def loss_curves(outcome: Outcome) -> Curves:
    """A model's panel of the loss picture, with the loss of a uniform guess to compare."""
    guess = math.log(outcome.metrics["uniform perplexity"])
    return Curves(outcome.records, f"{outcome.model.family}\n{outcome.model.triple}", guess)


def plot_outcomes(outcomes: list[Outcome], path: Path) -> Path:
    """One panel per model: training loss, validation loss, and the loss of a uniform guess."""
    return plot_losses([loss_curves(o) for o in outcomes], path, learning_rate=False)


def examples_table(outcome: Outcome) -> str:
    rows = outcome.examples
    if not rows:
        return ""
    if "prompt" in rows[0]:
        head = ["prompt", "greedy continuation", "sampled (top-p 0.9, T 0.8)"]
        body = [[r["prompt"], r["greedy"], r["sampled"]] for r in rows]
    elif "top" in rows[0]:
        head = ["text", "hidden word", "model's top 3"]
        body = [[r["text"], r["answer"], ", ".join(f"{t} ({100 * p:.0f} %)" for t, p in r["top"])] for r in rows]
    else:
        head = ["English", "model", "reference"]
        body = [[r["english"], ("✓ " if r["correct"] else "✗ ") + r["output"], r["reference"]] for r in rows]
    cells = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{''.join(f'<th>{escape(h)}</th>' for h in head)}</tr>{cells}</table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.4em 0}code,pre{background:#f6f6f6}
pre{padding:.6em;overflow-x:auto}.figure{font-weight:600}"""


def write_html(path: Path, outcomes: list[Outcome], loss_picture: Path, context: dict) -> Path:
    summary_rows = "".join(
        f"<tr><td>{escape(o.model.family)}</td><td><code>{escape(o.model.triple)}</code></td>"
        f"<td>{context['parameters'][o.model.key]:,}</td><td>{context['steps'][o.model.key]}</td><td>{o.seconds:.0f} "
        "s</td>"
        f"<td>{escape(headline(o))}</td><td>{'yes' if learned(o) else 'no'}</td></tr>"
        for o in outcomes
    )
    sections = "".join(
        f"<h2>{escape(o.model.family)}: <code>{escape(o.model.triple)}</code></h2><p>{escape(o.model.what)}</p>"
        f"<p class='figure'>{escape(headline(o))}</p>{examples_table(o)}"
        f"<img src='{escape(o.picture.name)}' alt='input, target and attention pattern of {escape(o.model.triple)}'>"
        for o in outcomes
    )
    commands = "\n".join(escape(c) for c in context["commands"])
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>triform demo</title>
<style>{STYLE}</style></head><body>
<h1>triform demo: one set of parts, three families</h1>
<p>The same Transformer parts, trained with different objectives and attention patterns, become an autoregressive
(GPT), an autoencoding (BERT) and a sequence-to-sequence model (Vaswani et al.). Every model below has the same
width and depth ({escape(context["model"])}); only the architecture, the objective and the attention pattern differ.</p>
<p>Text: {escape(context["text_origin"])}. Translation task: {escape(context["numbers"])}.
Size <code>{escape(context["size"])}</code>, {context["minutes"]:.1f} minutes on {escape(context["machine"])}.</p>
<table><tr><th>family</th><th>architecture + objective + pattern</th><th>parameters</th><th>steps</th><th>training</th>
<th>what it learned</th><th>well above the context-free guess</th></tr>{summary_rows}</table>
{sections}
<h2>Loss curves</h2><img src="{escape(loss_picture.name)}" alt="training and validation loss of each model">
<h2>Go on from here</h2><pre>{commands}</pre>
</body></html>
"""
    return atomic_write(path, page)


def write_json(path: Path, outcomes: list[Outcome], context: dict) -> Path:
    summary = {
        **{k: v for k, v in context.items() if k != "commands"},
        "models": [
            {
                "key": o.model.key,
                "family": o.model.family,
                "arch": o.model.arch,
                "objective": o.model.objective,
                "pattern": o.model.pattern,
                "seconds": o.seconds,
                "metrics": o.metrics,
                "learned": learned(o),
                "examples": o.examples,
                "picture": o.picture.name,
            }
            for o in outcomes
        ],
    }
    return atomic_write(path, json.dumps(summary, indent=1, ensure_ascii=False, default=str))
