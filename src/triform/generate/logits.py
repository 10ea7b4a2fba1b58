"""Next-token scores, reshaped: penalties and the filters that sampling draws through.

Plain functions on (B, V) float logits. A token removed from the running gets -inf, so that softmax
gives it probability 0 and argmax never picks it.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEG_INF = float("-inf")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide by the temperature: below 1 sharpens the distribution, above 1 flattens it."""
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k highest-scoring tokens of each row (Fan et al. 2018); k = 0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_best = logits.topk(k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_best, NEG_INF)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probabilities sum to at least p; the most likely token always stays."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    # A token is dropped when the tokens ranked above it already reach p.
    drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """Keep tokens whose probability is at least min_p times that of the most likely token
    (Nguyen et al. 2024, "min-p sampling"); the threshold scales with the model's confidence."""
    if min_p <= 0.0:
        return logits
    probabilities = logits.softmax(-1)
    threshold = min_p * probabilities.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probabilities < threshold, NEG_INF)


def repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty (Keskar et al. 2019, §4.1) on tokens already in the sequence (`seen`, (B, V)
    bool): a positive score is divided by the penalty and a negative one multiplied, so that a
    penalty above 1 always makes a seen token less likely."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def forbid(logits: Tensor, rows: list[int], tokens: list[list[int]]) -> Tensor:
    """Set logits[rows[i], tokens[i]] to -inf for every i (one list of tokens per listed row)."""
    row_index = [row for row, banned in zip(rows, tokens) for _ in banned]
    if not row_index:
        return logits
    token_index = [token for banned in tokens for token in banned]
    logits = logits.clone()
    logits[row_index, token_index] = NEG_INF
    return logits


class NgramBlocker:
    """No-repeat-n-gram (Paulus et al. 2018): a token that would complete an n-gram already present
    in the sequence is forbidden. Keeps, for one sequence, each (n-1)-gram's followers so far."""

    def __init__(self, n: int, history: list[int]):
        self.n = n
        self.followers: dict[tuple[int, ...], set[int]] = {}
        self.history: list[int] = []
        for token in history:
            self.push(token)

    def push(self, token: int) -> None:
        self.history.append(token)
        if len(self.history) >= self.n:
            gram = tuple(self.history[-self.n :])
            self.followers.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self) -> list[int]:
        if len(self.history) < self.n - 1:
            return []
        context = tuple(self.history[len(self.history) - self.n + 1 :])
        return sorted(self.followers.get(context, ()))

    def copy(self) -> NgramBlocker:
        twin = NgramBlocker.__new__(NgramBlocker)
        twin.n, twin.history = self.n, list(self.history)
        twin.followers = {key: set(value) for key, value in self.followers.items()}
        return twin


def warp(logits: Tensor, temperature: float, top_k: int, top_p: float, min_p: float) -> Tensor:
    """The sampling filters in the usual order: temperature, top-k, top-p, min-p."""
    logits = apply_temperature(logits, temperature)
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    return min_p_filter(logits, min_p)
