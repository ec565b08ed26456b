"""Multiple-choice knapsack: one option per unit, least total cost within a byte budget. Pure numpy.

Dynamic programming over the budget in steps of `resolution` bytes, as auto-round's AutoScheme solves its
per-layer choice (`auto_scheme/utils.py::choose_bits_per_layer_with_path`) but with exact GPTQ bytes.
Each option's size is rounded *up* to whole steps, so a solution never exceeds the budget in true bytes; it
is optimal on that grid (256-byte steps: within 120 x 256 B = 30 KiB of the true optimum on SmolLM2).
One pass gives every budget: `solve` keeps the choice table and `pick` reads any capacity off it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from compress.errors import CompressError


@dataclass(frozen=True)
class Solution:
    """The DP's tables: best[c] = least cost within c steps; choice[u, c] = unit u's option there."""

    best: np.ndarray  # (steps + 1,) float64, inf where nothing fits
    choice: np.ndarray  # (units, steps + 1) int16, -1 where nothing fits
    steps: np.ndarray  # (units, options) int64 sizes in steps; options padded with a huge size
    resolution: int


def solve(costs: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]], max_bytes: int,
          resolution: int = 256) -> Solution:
    """costs[u][k], sizes[u][k] (bytes) of option k of unit u; every budget up to `max_bytes`."""
    if len(costs) != len(sizes) or any(len(c) != len(s) for c, s in zip(costs, sizes)):
        raise ValueError("costs and sizes must have the same units and options")
    n_steps = int(max_bytes // resolution)
    width = max(len(c) for c in costs)
    steps = np.full((len(sizes), width), n_steps + 1, dtype=np.int64)
    cost = np.full((len(costs), width), np.inf)
    for u, (c, s) in enumerate(zip(costs, sizes)):
        steps[u, :len(s)] = -(-np.asarray(s, dtype=np.int64) // resolution)  # ceil
        cost[u, :len(c)] = c
    steps[~np.isfinite(cost)] = n_steps + 1  # an option priced inf is left out: never the smallest plan either
    best = np.zeros(n_steps + 1)  # no unit yet: cost 0 at every capacity
    choice = np.full((len(costs), n_steps + 1), -1, dtype=np.int16)
    candidates = np.empty((width, n_steps + 1))
    for u in range(len(costs)):
        candidates.fill(np.inf)
        for k in range(width):  # candidates[k, c] = best[c - size_k] + cost_k: option k last
            size = steps[u, k]
            if size <= n_steps and np.isfinite(cost[u, k]):
                np.add(best[:n_steps + 1 - size], cost[u, k], out=candidates[k, size:])
        pick = candidates.argmin(0)
        best = candidates[pick, np.arange(n_steps + 1)]
        choice[u] = np.where(np.isfinite(best), pick, -1)
    return Solution(best, choice, steps, resolution)


def pick(solution: Solution, budget_bytes: int) -> list[int]:
    """The option index per unit of the least-cost plan within `budget_bytes`; one-line error if none fits."""
    c = min(int(budget_bytes // solution.resolution), len(solution.best) - 1)
    if not np.isfinite(solution.best[c]):
        smallest = int(solution.steps.min(1).sum()) * solution.resolution
        raise CompressError(f"the budget {budget_bytes / 2**20:.3f} MiB is below the smallest plan the options "
                            f"allow ({smallest / 2**20:.3f} MiB)")
    chosen = [0] * solution.choice.shape[0]
    for u in range(solution.choice.shape[0] - 1, -1, -1):
        k = int(solution.choice[u, c])
        chosen[u] = k
        c -= int(solution.steps[u, k])
    return chosen
