"""Bit policies: pure functions from per-layer importance (or measured costs) to per-layer bit widths.

No torch. Layers are addressed by index; `order` is LayerScores.importance_order(column): most important
first. References: LayerwiseQuant (arXiv 2406.17415) for the count rule; AutoRound's AutoScheme for the
budgeted knapsack (shared/reference/algorithms.md §4.2, §6).
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from compress.errors import CompressError
from compress.plan import BITS
from compress.quant.storage import effective_bits

def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """Sorted distinct quantized widths, or a one-line error naming the valid ones."""
    bad = [b for b in widths if b not in BITS or b == 16]
    if bad or not widths:
        raise CompressError(f"bit widths must be chosen from {', '.join(map(str, BITS[:-1]))}; got "
                            f"{', '.join(map(str, widths)) or 'none'}")
    return tuple(sorted(set(widths)))


def layerwise_bits(order: Sequence[int], avg_bits: float, widths: Sequence[int] = (4, 2)) -> list[int]:
    """LayerwiseQuant: the k least important layers get the low width, the rest the high one, with
    k = round(L·(b_hi − b̄)/(b_hi − b_lo)) so that a fractional average is met (3.25 with 4/2 on 32 layers
    moves 12 layers to 2 bits)."""
    low, high = _two_widths(widths)
    if not low <= avg_bits <= high:
        raise CompressError(f"avg_bits (--avg-bits) {avg_bits} is outside the range of the widths {low}..{high}")
    n = len(order)
    if sorted(order) != list(range(n)):
        raise ValueError("order must be a permutation of the layer indices")
    k = round(n * (high - avg_bits) / (high - low))
    bits = [high] * n
    for index in order[n - k:] if k else []:
        bits[index] = low
    return bits


def _two_widths(widths: Sequence[int]) -> tuple[int, int]:
    widths = check_widths(widths)
    if len(widths) != 2:
        raise CompressError(f"this policy moves layers between two widths; got {', '.join(map(str, widths))}")
    return widths[0], widths[1]


def random_order(n_layers: int, seed: int) -> list[int]:
    """The baseline: a seeded random importance order."""
    order = list(range(n_layers))
    random.Random(seed).shuffle(order)
    return order


def proxy_costs(order: Sequence[int], widths: Sequence[int]) -> list[dict[int, float]]:
    """A cost per layer and width when only an importance order is known: importance weight in [1, 2]
    (by rank) times 4^-b, the relative mean squared error of b-bit rounding."""
    n = len(order)
    weight = {index: 2.0 - rank / max(1, n - 1) for rank, index in enumerate(order)}
    return [{b: weight[i] * 4.0 ** -b for b in check_widths(widths)} for i in range(n)]


def budgeted_bits(
    costs: Sequence[Mapping[int, float]],
    params: Sequence[int],
    avg_bits: float,
    group_sizes: Sequence[int | None] | None = None,
) -> list[int]:
    """Exact knapsack: choose one width per layer minimising Σ costs[i][b] subject to
    Σ params[i]·effective_bits(b) <= avg_bits·Σ params[i].

    Dynamic programming over the Pareto front of (stored bits, cost) of partial assignments: every
    non-dominated partial plan is kept, so the optimum is exact, not greedy.
    """
    n = len(costs)
    if len(params) != n:
        raise ValueError(f"{len(params)} parameter counts for {n} layers")
    group_sizes = list(group_sizes) if group_sizes is not None else [None] * n
    widths = [check_widths(list(c)) for c in costs]
    capacity = avg_bits * sum(params) * (1 + 1e-12)
    cheapest = sum(p * min(effective_bits(b, g) for b in w) for p, g, w in zip(params, group_sizes, widths))
    if cheapest > capacity:
        raise CompressError(f"avg_bits (--avg-bits) {avg_bits} is below the smallest possible average "
                            f"{cheapest / sum(params):.3f} for these widths")
    front: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]  # (stored bits, cost, widths so far)
    for i in range(n):
        grown = [(bits + params[i] * effective_bits(b, group_sizes[i]), cost + costs[i][b], chosen + (b,))
                 for bits, cost, chosen in front for b in widths[i]]
        grown.sort(key=lambda s: (s[0], s[1]))
        front, best = [], float("inf")
        for state in grown:  # keep a state only if it is cheaper than every state that stores fewer bits
            if state[0] <= capacity and state[1] < best:
                front.append(state)
                best = state[1]
    return list(front[-1][2])
