"""The comparisons a comparison's table was run to settle, in words computed from it: an objective
against its paper's rival (ELECTRA against BERT's masked LM), and a mixture of objectives against
each specialist, on the specialist's own task, on the labelled task and on average.

Who is a specialist, a rival or a mixture is each objective's own declaration (`specialty`, `rival`,
`Mixture`); nothing here names an objective. Every difference is given with the seed spread of
both rows and the verdict of verdicts.py (a lead counts beyond NOISE standard deviations).
"""

from __future__ import annotations

from triform.compare.plan import NONE
from triform.compare.table import LOWER_IS_BETTER, headlines, score_columns
from triform.compare.verdicts import lead, mean_ranks, shown
from triform.objectives import objective_class
from triform.objectives.mixture import Mixture


def head_to_head(table: list[dict], labelled: str | None = None) -> list[str]:
    """Lines of Markdown: one block per rival pair and per mixture; none when the table has neither."""
    pretrained = [row for row in table if row["entry"].objective != NONE]
    lines = []
    for row in pretrained:
        rival = objective_class(row["entry"].objective).rival
        for other in (o for o in pretrained if rival and o["entry"].objective == rival):
            if other["entry"].arch == row["entry"].arch and not other["entry"].options:
                lines += against_rival(row, other, labelled)
    specialists = [row for row in pretrained if objective_class(row["entry"].objective).specialty]
    for row in pretrained:
        if issubclass(objective_class(row["entry"].objective), Mixture) and specialists:
            lines += against_specialists(row, specialists, table, labelled)
    return lines


def gap_text(name: str, first: dict, second: dict, labelled: str | None) -> str:
    """`first` against `second` on score `name`: both, the difference, the verdict."""
    percent = {column: p for column, _, p in score_columns(labelled)}[name]
    lower = name in LOWER_IS_BETTER
    both = f"{shown(name, *first[name], percent)} against {shown(name, *second[name], percent)}"
    if first[name][0] == second[name][0]:
        return f"{both}: level"
    ahead, behind = (first, second) if lead(first[name], second[name], lower)[0] > 0 else (second, first)
    gap, verdict = lead(ahead[name], behind[name], lower)  # judged from the leader's side
    size = shown(name, gap, None, percent, gap=True)
    return f"{both}: {ahead['entry'].label} ahead by {size}, {verdict.replace('clearly ahead', 'clearly')}"


def against_rival(row: dict, rival: dict, labelled: str | None) -> list[str]:
    tasks = headlines(labelled)
    first = [labelled] if labelled else []  # the task the rival's paper judged it by (fine-tuned)
    order = first + [task for task in tasks if task not in first]
    return [
        f"- **{row['entry'].label} against {rival['entry'].label}**, the pair its paper compares at equal compute:",
        *(f"  - {task} ({tasks[task]}): {gap_text(tasks[task], row, rival, labelled)}." for task in order),
    ]


def against_specialists(mixture: dict, specialists: list[dict], table: list[dict], labelled: str | None) -> list[str]:
    tasks = headlines(labelled)
    lines = [f"- **{mixture['entry'].label} against each specialist**:"]
    for specialist in specialists:
        task = objective_class(specialist["entry"].objective).specialty
        lines.append(
            f"  - on {specialist['entry'].label}'s own task, {task} ({tasks[task]}): "
            f"{gap_text(tasks[task], mixture, specialist, labelled)}."
        )
    if labelled:
        for specialist in specialists:
            name = tasks[labelled]
            lines.append(
                f"  - on {labelled} ({name}), against {specialist['entry'].label}: "
                f"{gap_text(name, mixture, specialist, labelled)}."
            )
    ranks = {id(row): (mean, std) for row, mean, std in mean_ranks(table, labelled)}
    wins = []
    for specialist in specialists:
        mine, theirs = ranks[id(mixture)], ranks[id(specialist)]
        if mine[0] == theirs[0]:
            judged = "level"
        else:
            who, leader, other = (
                ("the mixture", mine, theirs) if mine[0] < theirs[0] else ("the specialist", theirs, mine)
            )
            judged = f"{who} ahead, {lead(leader, other, lower=True)[1].replace('clearly ahead', 'clearly')}"
        wins.append(f"{specialist['entry'].label} {shown('', *theirs)} ({judged})")
    lines.append(
        f"  - on average (mean rank over the {len(tasks)} tasks among all {len(table)} rows, 1 best): "
        f"{shown('', *ranks[id(mixture)])}; " + "; ".join(wins) + "."
    )
    return lines
