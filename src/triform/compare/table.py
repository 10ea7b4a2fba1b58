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
LOWER_IS_BETTER = ("next-token perplexity",)
# A training step costs about 6 FLOPs per token and parameter: 2 forward, 4 backward (Kaplan et al.
# 2020, §2.1, C = 6 N D).
FLOPS_PER_TOKEN_PARAMETER = 6
# The one score of each task that ranks the models (findings.py) and is plotted.
HEADLINE = {"next-token": "next-token accuracy", "masked-token": "masked-token accuracy", "restore": "restore chrF"}


# What the row that needs no model does on each task (the labelled task: its commonest label).
NO_MODEL = {
    "next-token": "the context-free guess",
    "masked-token": "the context-free guess",
    "restore": "copying the input",
}
NO_MODEL_LABELLED = "the commonest label"


def labels_task(settings) -> str | None:
    """The name of the task on labelled records, when the comparison has them."""
    return getattr(settings, "labels_name", None) if getattr(settings, "labels", None) else None


def score_columns(labelled: str | None = None) -> tuple:
    """SCORES, and the labelled task's accuracy and macro-F1 when there is one."""
    if not labelled:
        return SCORES
    return SCORES + (
        (f"{labelled} accuracy", (labelled, "accuracy"), True),
        (f"{labelled} macro-F1", (labelled, "macro_f1"), True),
    )


def headlines(labelled: str | None = None) -> dict[str, str]:
    return {**HEADLINE, **({labelled: f"{labelled} accuracy"} if labelled else {})}


def value(result: dict, path: tuple[str, str]) -> float:
    return float(result[path[0]][path[1]])


def entry_of(result: dict) -> Entry:
    options = tuple((result.get("options") or {}).items())
    return Entry(result["arch"], result["objective"], result["pattern"], options)


def run_rows(results: list[dict], columns: tuple = SCORES) -> list[dict]:
    rows = []
    for r in sorted(results, key=lambda r: (r["arch"], entry_of(r).spec, str(r["pattern"]), r["seed"])):
        row = {
            "arch": r["arch"],
            "objective": entry_of(r).spec,
            "pattern": r["pattern"] or "",
            "seed": r["seed"],
            "pretraining steps": r.get("pretraining", {}).get("steps", 0),
            "pretraining tokens": r.get("pretraining", {}).get("tokens", 0),
        }
        for task in tasks_of(columns):
            row[f"{task} fine-tuning steps"] = r.get(f"{task} fine-tuning", {}).get("steps", 0)
        row.update({name: value(r, path) for name, path, _ in columns})
        row["seconds"] = round(r["seconds"], 1)
        rows.append(row)
    return rows


def tasks_of(columns: tuple) -> list[str]:
    return list(dict.fromkeys(path[0] for _, path, _ in columns))


def aggregate(results: list[dict], chosen: list[Entry], columns: tuple = SCORES) -> list[dict]:
    """Per entry, in the order compared: the mean and sample standard deviation of each score,
    and the runs themselves (by seed) for what is computed per seed (findings.py)."""
    table = []
    for entry in chosen:
        mine = sorted((r for r in results if entry_of(r) == entry), key=lambda r: r["seed"])
        if not mine:
            continue
        row = {"entry": entry, "runs": len(mine), "results": mine}
        for name, path, _ in columns:
            values = np.array([value(r, path) for r in mine])
            row[name] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan"))
        table.append(row)
    return table


def cell(mean: float, std: float, percent: bool) -> str:
    scale = 100 if percent else 1
    text = f"{scale * mean:.1f}"
    return text if math.isnan(std) else f"{text} ± {scale * std:.1f}"


REFERENCE_LABEL = "*no model: context-free guess; restore: the input copied*"
LABELLED_REFERENCE = "; labels: the commonest"


def markdown(table: list[dict], reference: dict | None = None, labelled: str | None = None) -> str:
    """The table; `reference` (the scores that need no model) becomes its last row, in italics."""
    columns = score_columns(labelled)
    names = [name for name, _, _ in columns]
    lines = [
        "| architecture + objective + pattern | runs | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    best = {name: (min if name in LOWER_IS_BETTER else max)(row[name][0] for row in table) for name in names}
    for row in table:
        cells = []
        for name, _, percent in columns:
            text = cell(*row[name], percent)
            cells.append(f"**{text}**" if row[name][0] == best[name] else text)
        lines.append(f"| {row['entry'].label} | {row['runs']} | " + " | ".join(cells) + " |")
    if reference:
        cells = [
            f"*{cell(value(reference, path), float('nan'), percent)}*" if path[0] in reference else "–"
            for _, path, percent in columns
        ]
        label = REFERENCE_LABEL[:-1] + (LABELLED_REFERENCE if labelled else "") + "*"
        lines.append(f"| {label} | – | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budgets(results: list[dict], settings, labelled: str | None = None) -> list[dict]:
    """What each training was given: its fraction of the pretraining budget, that compute, and the
    steps it bought on each architecture (a range where the runs differ)."""
    parts = [("pretraining", "pretraining")] + [(task, f"{task} fine-tuning") for task in headlines(labelled)]
    rows = []
    for task, key in parts:
        given = [r[key] for r in results if key in r]
        if not given:
            continue
        fraction = given[0].get("fraction", 1.0 if task == "pretraining" else settings.finetune)
        compute = float(fraction) * float(settings.budget)
        row = {"task": task, "fraction": fraction, "compute": compute, "flops": FLOPS_PER_TOKEN_PARAMETER * compute}
        for arch in ("stack", "encoder-decoder"):
            steps = sorted(r[key]["steps"] for r in results if key in r and r["arch"] == arch)
            row[f"steps ({arch})"] = (
                "" if not steps else f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]}–{steps[-1]}"
            )
        rows.append(row)
    return rows


def budget_markdown(rows: list[dict]) -> str:
    lines = [
        "| training | fraction of the pretraining budget | tokens x parameters | training FLOPs (6 x that) | "
        "steps (stack) | steps (encoder-decoder) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {float(row['fraction']):g} | {row['compute']:.2e} | {row['flops']:.2e} | "
            f"{row['steps (stack)'] or '–'} | {row['steps (encoder-decoder)'] or '–'} |"
        )
    return "\n".join(lines)


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def table_csv_rows(table: list[dict], columns: tuple = SCORES) -> list[dict]:
    rows = []
    for row in table:
        entry = row["entry"]
        flat = {"arch": entry.arch, "objective": entry.spec, "pattern": entry.pattern or "", "runs": row["runs"]}
        for name, _, _ in columns:
            flat[f"{name} mean"], flat[f"{name} std"] = row[name]
        rows.append(flat)
    return rows


def plot(table: list[dict], path: Path, title: str, reference: dict | None = None, labelled: str | None = None) -> Path:
    """One panel per task's headline score: a bar per entry (mean over seeds) with the standard
    deviation as error bar, and the score that needs no model as a dashed line."""
    plt, columns = pyplot(), score_columns(labelled)
    labels = [row["entry"].label for row in table]
    colours = [
        "#bbbbbb" if row["entry"].objective == NONE else ("#3b6fb6" if row["entry"].arch == "stack" else "#e07b39")
        for row in table
    ]
    plotted = list(headlines(labelled).values())
    figure, axes = plt.subplots(1, len(plotted), figsize=(4.2 * len(plotted), 0.36 * len(table) + 1.6), sharey=True)
    positions = np.arange(len(table))[::-1]
    for axis, name in zip(axes, plotted):
        path_of, percent = {n: (p, c) for n, p, c in columns}[name]
        scale = 100 if percent else 1
        means = [scale * row[name][0] for row in table]
        errors = [0 if math.isnan(row[name][1]) else scale * row[name][1] for row in table]
        axis.barh(positions, means, xerr=errors, color=colours, capsize=2, error_kw={"linewidth": 0.8})
        if reference and path_of[0] in reference:
            axis.axvline(
                scale * value(reference, path_of),
                color="black",
                linestyle="--",
                linewidth=1,
                label=NO_MODEL.get(path_of[0], NO_MODEL_LABELLED),
            )
            axis.legend(fontsize=7, loc="lower right")
        axis.set_title(name + (" (%)" if percent else ""), fontsize=10)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def write_outputs(results: list[dict], chosen: list[Entry], settings, reference: dict | None, out: Path) -> dict:
    labelled = labels_task(settings)
    columns = score_columns(labelled)
    rows = run_rows(results, columns)
    table = aggregate(results, chosen, columns)
    atomic_write(out / "results.csv", csv_text(rows))
    atomic_write(out / "table.csv", csv_text(table_csv_rows(table, columns)))
    spent = budgets(results, settings, labelled)
    atomic_write(out / "budgets.csv", csv_text(spent))
    text = markdown(table, reference, labelled) + "\n\nWhat each training was given:\n\n" + budget_markdown(spent)
    atomic_write(out / "table.md", text + "\n")
    seeds = sorted({r["seed"] for r in results})
    given = ", ".join(f"{row['task']} {float(row['fraction']):g}" for row in spent[1:])
    title = (
        f"{Path(settings.data).name}: pretraining {float(settings.budget):.1e} tokens x parameters each, fine-tuning "
        f"per task as a fraction of that: {given}; mean ± std over seeds {', '.join(map(str, seeds))}"
    )
    picture = plot(table, out / "compare.png", title, reference, labelled)
    return {
        "markdown": out / "table.md",
        "table": text,
        "aggregate": table,
        "columns": columns,
        "labelled": labelled,
        "csv": out / "table.csv",
        "runs_csv": out / "results.csv",
        "plot": picture,
    }
