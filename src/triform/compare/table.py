"""A comparison's outputs: every run as a CSV row, the table of means and standard deviations
(Markdown and CSV) and a plot with error bars."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from triform.compare.plan import NONE, Entry
from triform.io import atomic_write
from triform.train.plots import pyplot, save_figure

# (column name, where in a result, percent?) of the scores reported
SCORES = (
    ("next-token accuracy", ("next-token", "accuracy"), True),
    ("next-token perplexity", ("next-token", "perplexity"), False),
    ("masked-token accuracy", ("masked-token", "accuracy"), True),
    ("restore exact match", ("restore", "exact"), True),
    ("restore chrF", ("restore", "chrf"), False),
)
PLOTTED = ("next-token accuracy", "masked-token accuracy", "restore chrF")


def value(result: dict, path: tuple[str, str]) -> float:
    return float(result[path[0]][path[1]])


def run_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in sorted(results, key=lambda r: (r["arch"], r["objective"], str(r["pattern"]), r["seed"])):
        row = {
            "arch": r["arch"],
            "objective": r["objective"],
            "pattern": r["pattern"] or "",
            "seed": r["seed"],
            "pretraining steps": r.get("pretraining", {}).get("steps", 0),
            "pretraining tokens": r.get("pretraining", {}).get("tokens", 0),
        }
        row.update({name: value(r, path) for name, path, _ in SCORES})
        row["seconds"] = round(r["seconds"], 1)
        rows.append(row)
    return rows


def aggregate(results: list[dict], chosen: list[Entry]) -> list[dict]:
    """Per entry, in the order compared: the mean and sample standard deviation of each score."""
    table = []
    for entry in chosen:
        mine = [
            r
            for r in results
            if (r["arch"], r["objective"], r["pattern"]) == (entry.arch, entry.objective, entry.pattern)
        ]
        if not mine:
            continue
        row = {"entry": entry, "runs": len(mine)}
        for name, path, _ in SCORES:
            values = np.array([value(r, path) for r in mine])
            row[name] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan"))
        table.append(row)
    return table


def cell(mean: float, std: float, percent: bool) -> str:
    scale = 100 if percent else 1
    text = f"{scale * mean:.1f}"
    return text if math.isnan(std) else f"{text} ± {scale * std:.1f}"


REFERENCE_LABEL = "*no model: context-free guess; restore: the input copied*"


def markdown(table: list[dict], reference: dict | None = None) -> str:
    """The table; `reference` (the scores that need no model) becomes its last row, in italics."""
    names = [name for name, _, _ in SCORES]
    lines = [
        "| architecture + objective + pattern | runs | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    best = {name: (max if name != "next-token perplexity" else min)(row[name][0] for row in table) for name in names}
    for row in table:
        cells = []
        for name, _, percent in SCORES:
            text = cell(*row[name], percent)
            cells.append(f"**{text}**" if row[name][0] == best[name] else text)
        lines.append(f"| {row['entry'].label} | {row['runs']} | " + " | ".join(cells) + " |")
    if reference:
        cells = [f"*{cell(value(reference, path), float('nan'), percent)}*" for _, path, percent in SCORES]
        lines.append(f"| {REFERENCE_LABEL} | – | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def table_csv_rows(table: list[dict]) -> list[dict]:
    rows = []
    for row in table:
        entry = row["entry"]
        flat = {"arch": entry.arch, "objective": entry.objective, "pattern": entry.pattern or "", "runs": row["runs"]}
        for name, _, _ in SCORES:
            flat[f"{name} mean"], flat[f"{name} std"] = row[name]
        rows.append(flat)
    return rows


def plot(table: list[dict], path: Path, title: str, reference: dict | None = None) -> Path:
    """One panel per score: a bar per entry (mean over seeds) with the standard deviation as error
    bar, and the score that needs no model as a dashed line."""
    plt = pyplot()
    labels = [row["entry"].label for row in table]
    colours = [
        "#bbbbbb" if row["entry"].objective == NONE else ("#3b6fb6" if row["entry"].arch == "stack" else "#e07b39")
        for row in table
    ]
    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(4.2 * len(PLOTTED), 0.36 * len(table) + 1.6), sharey=True)
    positions = np.arange(len(table))[::-1]
    for axis, name in zip(axes, PLOTTED):
        percent = dict((n, p) for n, _, p in SCORES)[name]
        scale = 100 if percent else 1
        means = [scale * row[name][0] for row in table]
        errors = [0 if math.isnan(row[name][1]) else scale * row[name][1] for row in table]
        axis.barh(positions, means, xerr=errors, color=colours, capsize=2, error_kw={"linewidth": 0.8})
        if reference:
            path_of = dict((n, p) for n, p, _ in SCORES)[name]
            axis.axvline(
                scale * value(reference, path_of),
                color="black",
                linestyle="--",
                linewidth=1,
                label="context-free guess" if name != "restore chrF" else "input copied",
            )
            axis.legend(fontsize=7, loc="lower right")
        axis.set_title(name + (" (%)" if percent else ""), fontsize=10)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def write_outputs(results: list[dict], chosen: list[Entry], settings, reference: dict | None, out: Path) -> dict:
    rows = run_rows(results)
    table = aggregate(results, chosen)
    atomic_write(out / "results.csv", csv_text(rows))
    atomic_write(out / "table.csv", csv_text(table_csv_rows(table)))
    text = markdown(table, reference)
    atomic_write(out / "table.md", text + "\n")
    seeds = sorted({r["seed"] for r in results})
    title = (
        f"{Path(settings.data).name}: pretraining {settings.budget:.1e} tokens x parameters each, fine-tuning "
        f"{settings.finetune:g} of that per task; mean ± std over seeds {', '.join(map(str, seeds))}"
    )
    picture = plot(table, out / "compare.png", title, reference)
    return {
        "markdown": out / "table.md",
        "table": text,
        "csv": out / "table.csv",
        "runs_csv": out / "results.csv",
        "plot": picture,
    }
