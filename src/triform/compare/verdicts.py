"""How a comparison judges a difference and ranks its rows, shared by findings.py and
head_to_head.py: a lead counts ("clearly") when it exceeds NOISE times the larger standard deviation
between seeds of the two rows; the average over tasks is a mean rank per seed (findings.py says how).
"""

from __future__ import annotations

import math

import numpy as np

from triform.compare.table import LOWER_IS_BETTER, headlines, score_columns, value

NOISE = 2  # standard deviations between seeds


def spread(std: float) -> float:
    return 0.0 if math.isnan(std) else std


def shown(name: str, mean: float, std: float | None = None, percent: bool = False, gap: bool = False) -> str:
    """A score as the table shows it; `gap`: a difference of two, in points where they are percentages."""
    scale, unit = (100, " points" if gap else " %") if percent else (1, "")
    text = f"{scale * mean:.1f}"
    if std is not None and not math.isnan(std):
        text += f" ± {scale * std:.1f}"
    return text + unit


def lead(first: tuple[float, float], second: tuple[float, float], lower: bool = False) -> tuple[float, str]:
    """(how far first is ahead of second, "clearly ahead" or "within noise")."""
    (m1, s1), (m2, s2) = first, second
    gap = (m2 - m1) if lower else (m1 - m2)
    if math.isnan(s1) and math.isnan(s2):
        return gap, "one seed each, no spread to judge by"
    return gap, "clearly ahead" if gap > NOISE * max(spread(s1), spread(s2)) else "within noise"


def ranked(table: list[dict], name: str) -> list[dict]:
    sign = 1 if name in LOWER_IS_BETTER else -1
    return sorted(table, key=lambda row: sign * row[name][0])


def seed_ranks(table: list[dict], labelled: str | None = None) -> tuple[np.ndarray, list[int]]:
    """(rows x seeds) of each row's rank averaged over the tasks, for the seeds every row has; with
    none in common, one column from the means."""
    common = set.intersection(*({r["seed"] for r in row["results"]} for row in table))
    seeds = sorted(common)
    names = list(headlines(labelled).values())
    paths = {name: path for name, path, _ in score_columns(labelled)}

    def scores(name: str, seed: int | None) -> np.ndarray:
        if seed is None:
            return np.array([row[name][0] for row in table])
        return np.array([value(next(r for r in row["results"] if r["seed"] == seed), paths[name]) for row in table])

    columns = []
    for seed in seeds or [None]:
        ranks = np.zeros(len(table))
        for name in names:
            values = scores(name, seed) * (1 if name in LOWER_IS_BETTER else -1)
            ranks += average_ranks(values)
        columns.append(ranks / len(names))
    return np.stack(columns, axis=1), seeds


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1 for the smallest value, ties sharing the mean of the ranks they span."""
    ranks = np.empty(len(values))
    order = np.argsort(values, kind="stable")
    position = 0
    while position < len(order):
        end = position
        while end + 1 < len(order) and values[order[end + 1]] == values[order[position]]:
            end += 1
        ranks[order[position : end + 1]] = (position + end) / 2 + 1
        position = end + 1
    return ranks


def mean_ranks(table: list[dict], labelled: str | None = None) -> list[tuple[dict, float, float]]:
    """(row, mean rank over tasks, its standard deviation over seeds), best first."""
    ranks, seeds = seed_ranks(table, labelled)
    spreads = ranks.std(axis=1, ddof=1) if len(seeds) > 1 else np.full(len(table), np.nan)
    found = [(row, float(ranks[i].mean()), float(spreads[i])) for i, row in enumerate(table)]
    return sorted(found, key=lambda item: item[1])
