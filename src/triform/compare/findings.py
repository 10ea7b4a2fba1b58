"""What a comparison's table shows, in words computed from it, so that the words always match the
numbers: which pair wins each task and which wins on average, each lead with the seed spread of
the two rows beside it.

A difference counts ("clearly") when it exceeds twice the larger standard deviation between seeds
of the two rows. The average over tasks is a mean rank: on each task the rows are ranked by that
task's headline score (1 best, ties sharing their mean rank), separately for every seed all rows
have, and a row's ranks are averaged over the tasks; the mean and standard deviation of that
average over the seeds give the average and its spread.
"""

from __future__ import annotations

from triform.compare.head_to_head import head_to_head
from triform.compare.plan import NONE
from triform.compare.table import LOWER_IS_BETTER, NO_MODEL, NO_MODEL_LABELLED, headlines, score_columns, value
from triform.compare.verdicts import NOISE, lead, mean_ranks, ranked, shown


def winners(table: list[dict], labelled: str | None = None) -> list[str]:
    """One line per task: the winner, the runner-up and the lead between them, with both spreads."""
    percent = {name: p for name, _, p in score_columns(labelled)}
    lines = []
    for task, name in headlines(labelled).items():
        order = ranked(table, name)
        best = order[0]
        text = f"- **{task}** ({name}): won by {best['entry'].label} ({shown(name, *best[name], percent[name])})"
        if len(order) > 1:
            second = order[1]
            gap, verdict = lead(best[name], second[name], name in LOWER_IS_BETTER)
            text += (
                f", ahead of {second['entry'].label} ({shown(name, *second[name], percent[name])}) by "
                f"{shown(name, gap, None, percent[name], gap=True)}: {verdict}"
            )
        lines.append(text + ".")
    return lines


def on_average(table: list[dict], labelled: str | None = None) -> str:
    ranking = mean_ranks(table, labelled)
    tasks = len(headlines(labelled))
    best = ranking[0]
    text = (
        f"- **on average over the {tasks} tasks** (mean rank among the {len(table)} rows on each task's headline "
        f"score, 1 best, ± over seeds): won by {best[0]['entry'].label} ({shown('', best[1], best[2])})"
    )
    if len(ranking) > 1:
        second = ranking[1]
        gap, verdict = lead((best[1], best[2]), (second[1], second[2]), lower=True)
        text += f", ahead of {second[0]['entry'].label} ({shown('', second[1], second[2])}) by {gap:.1f}: {verdict}"
    rest = "; ".join(f"{row['entry'].label} {shown('', mean, std)}" for row, mean, std in ranking)
    return text + f". Every row: {rest}."


def details(table: list[dict], reference: dict | None, labelled: str | None = None) -> list[str]:
    """Per score: best and worst pretrained pair, how many beat no pretraining, the best of each
    architecture, and how many beat the row that needs no model."""
    pretrained = [row for row in table if row["entry"].objective != NONE]
    if not pretrained:
        return []
    return [
        detail(column, pretrained, table, reference)
        for column in score_columns(labelled)
        if column[0] != "restore exact match"
    ]


def detail(column: tuple, pretrained: list[dict], table: list[dict], reference: dict | None) -> str:
    name, path, percent = column
    lower = name in LOWER_IS_BETTER
    baselines = {row["entry"].arch: row for row in table if row["entry"].objective == NONE}

    def clearly(a: dict, b: dict) -> bool:
        return lead(a[name], b[name], lower)[1] == "clearly ahead"

    order = ranked(pretrained, name)
    best, worst = order[0], order[-1]
    text = (
        f"- **{name}**: best {best['entry'].label} ({shown(name, best[name][0], None, percent)}), "
        f"worst {worst['entry'].label} ({shown(name, worst[name][0], None, percent)})"
    )
    compared = [row for row in pretrained if row["entry"].arch in baselines]
    if compared:
        beaten = sum(clearly(row, baselines[row["entry"].arch]) for row in compared)
        text += f"; {beaten} of {len(compared)} pretrained models clearly beat the same architecture without "
        text += "pretraining"
    by_arch = {}
    for arch in ("stack", "encoder-decoder"):
        rows = [row for row in pretrained if row["entry"].arch == arch]
        if rows:
            by_arch[arch] = ranked(rows, name)[0]
    if len(by_arch) == 2:
        stack, pair = by_arch["stack"], by_arch["encoder-decoder"]
        verdict = (
            "the best stack is clearly ahead"
            if clearly(stack, pair)
            else "the best encoder-decoder is clearly ahead"
            if clearly(pair, stack)
            else "the best of each architecture are within noise"
        )
        text += (
            f"; {verdict} (stack {shown(name, *stack[name], percent)}, "
            f"encoder-decoder {shown(name, *pair[name], percent)})"
        )
    if reference and path[0] in reference:
        guess = value(reference, path)
        above = sum((guess - row[name][0] if lower else row[name][0] - guess) > 0 for row in pretrained)
        what = NO_MODEL.get(path[0], NO_MODEL_LABELLED)
        text += f"; {above} of {len(pretrained)} pretrained models do better than {what} "
        text += f"({shown(name, guess, None, percent)})"
    return text + "."


def twins(table: list[dict], labelled: str | None = None) -> list[str]:
    """Rows that score exactly alike, seed for seed: two objectives that make the same examples."""
    names = [name for name, _, _ in score_columns(labelled)]
    return [
        f"- {a['entry'].label} and {b['entry'].label} score exactly alike, seed for seed: on this architecture the "
        "two objectives make the same training examples."
        for i, a in enumerate(table)
        for b in table[i + 1 :]
        if all(a[name] == b[name] for name in names)
    ]


def findings(table: list[dict], reference: dict | None = None, labelled: str | None = None) -> str:
    lines = [
        f"Who wins (a lead counts when it exceeds {NOISE} × the larger standard deviation between seeds of the "
        "two rows):",
        "",
        *winners(table, labelled),
        on_average(table, labelled),
        "",
        "Score by score:",
        "",
        *details(table, reference, labelled),
        *twins(table, labelled),
    ]
    paired = head_to_head(table, labelled)
    if paired:
        lines += ["", "Head to head:", "", *paired]
    return "\n".join(lines)
