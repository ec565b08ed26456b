"""Which decoder layers to remove or skip: pure functions from scores (or a pattern) to layer indices.

No torch. Layers are addressed by index; results are sorted lists of indices to *drop*. References
(shared/reference/algorithms.md §5): ShortGPT (arXiv 2403.03853) drops the n layers of lowest Block
Influence; Gromov et al. (arXiv 2403.17887) drop the contiguous run ℓ*..ℓ*+n−1 whose angular distance
between the input of ℓ and of ℓ+n is smallest; Unified Layer Skipping (arXiv 2404.06954, code
Adaxry/Unified_Layer_Skipping run_clm_llms.py) keeps a fixed, evenly spaced pattern; greedy removal
measures; random order is the baseline.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

from compress.errors import CompressError


def drop_count(n_layers: int, drop: int | None = None, drop_ratio: float | None = None,
               speedup: float | None = None) -> int:
    """How many layers to remove, from exactly one of drop = n, drop_ratio = r (round(r·L)) or speedup = s
    (L − ⌊L/s⌋, as Unified Layer Skipping keeps ⌊L/s⌋ layers). At least one layer must stay."""
    given = [x is not None for x in (drop, drop_ratio, speedup)]
    if sum(given) != 1:
        raise CompressError("give exactly one of drop, drop_ratio, speedup")
    if drop is not None:
        n = drop
    elif drop_ratio is not None:
        if not 0 <= drop_ratio < 1:
            raise CompressError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
        n = round(drop_ratio * n_layers)
    else:
        if not speedup >= 1:
            raise CompressError(f"speedup must be >= 1, got {speedup}")
        n = n_layers - math.floor(n_layers / speedup)
    if not 0 <= n < n_layers:
        raise CompressError(f"cannot remove {n} of {n_layers} layers: at least one must stay")
    return n


def check_drop(indices: Sequence[int], n_layers: int) -> list[int]:
    """Sorted indices to drop, or a one-line error for duplicates, out-of-range indices or dropping all."""
    if len(set(indices)) != len(indices):
        raise CompressError(f"duplicate layer indices in {list(indices)}")
    bad = [i for i in indices if not 0 <= i < n_layers]
    if bad:
        raise CompressError(f"layer indices {bad} are out of range 0..{n_layers - 1}")
    if len(indices) >= n_layers:
        raise CompressError(f"cannot remove all {n_layers} layers")
    return sorted(indices)


def least_important(order: Sequence[int], n: int) -> list[int]:
    """ShortGPT: the n layers at the end of an importance order (LayerScores.importance_order('bi'))."""
    if sorted(order) != list(range(len(order))):
        raise ValueError("order must be a permutation of the layer indices")
    return check_drop(list(order[len(order) - n:]) if n else [], len(order))


def contiguous_block(distance: Sequence[float], n_layers: int, n: int) -> list[int]:
    """Gromov et al.: distance[ℓ] = angular distance between the inputs of layer ℓ and ℓ + n, for
    ℓ = 0..L−n; drop ℓ*..ℓ*+n−1 with ℓ* = argmin (the first one on ties)."""
    if n == 0:
        return []
    if len(distance) != n_layers - n + 1:
        raise ValueError(f"need {n_layers - n + 1} distances for runs of {n} in {n_layers} layers, got "
                         f"{len(distance)}")
    start = min(range(len(distance)), key=lambda i: distance[i])
    return check_drop(list(range(start, start + n)), n_layers)


def uls_kept(n_layers: int, speedup: float) -> list[int]:
    """Unified Layer Skipping's kept layers, integer arithmetic as the reference code: keep 0 and L−1,
    R = ⌊L/s⌋ layers in all, and every idx in 1..L−2 with idx mod ⌊L/(R−1)⌋ = 0 until R are kept.
    L = 32, s = 5 -> [0, 6, 12, 18, 24, 31]."""
    kept_count = math.floor(n_layers / speedup)
    if kept_count < 2:
        raise CompressError(f"speedup {speedup} keeps {kept_count} of {n_layers} layers; the first and last "
                            f"must stay, so it can be at most {n_layers / 2:g}")
    return _reference_pattern(n_layers, kept_count)


def _reference_pattern(n_layers: int, kept_count: int) -> list[int]:
    step = n_layers // (kept_count - 1)
    kept = [0, n_layers - 1]
    for index in range(1, n_layers - 1):
        if len(kept) >= kept_count:
            break
        if index % step == 0:
            kept.append(index)
    return sorted(kept)


def uls_dropped(n_layers: int, speedup: float) -> list[int]:
    kept = set(uls_kept(n_layers, speedup))
    return [i for i in range(n_layers) if i not in kept]


def uls_drop(n_layers: int, n: int) -> list[int]:
    """Unified Layer Skipping for a drop count (skip, decode_skip) rather than an integer speed-up: the reference
    pattern for R = L − n kept layers while its step ⌊L/(R−1)⌋ is ≥ 2. Below a 2× speed-up the reference
    step is 1 and the rule degenerates into dropping the block just under the last layer (L = 30, n = 8
    keeps 0..20 and 29), which is not balanced; there the n dropped layers are spread evenly over the
    interior 1..L−2 instead: 1 + ⌊(k + ½)(L − 2)/n⌋ for k = 0..n−1 (L = 30, n = 8 -> [2, 6, 9, 13, 16, 20, 23, 27])."""
    if n == 0:
        return []
    if n > n_layers - 2:
        raise CompressError(f"Unified Layer Skipping keeps the first and last layer: it can drop at most "
                            f"{n_layers - 2} of {n_layers}, not {n}")
    kept_count = n_layers - n
    if kept_count >= 2 and n_layers // (kept_count - 1) >= 2:
        kept = set(_reference_pattern(n_layers, kept_count))
        return [i for i in range(n_layers) if i not in kept]
    interior = n_layers - 2
    return check_drop([1 + math.floor((k + 0.5) * interior / n) for k in range(n)], n_layers)


def random_drop(n_layers: int, n: int, seed: int) -> list[int]:
    """The baseline: n layers drawn at random (seeded)."""
    return check_drop(random.Random(seed).sample(range(n_layers), n), n_layers)


def greedy_order(n_layers: int, n: int, loss: Callable[[list[int]], float]) -> list[tuple[int, float]]:
    """Measured: remove one layer at a time, each time the one whose removal (with those already removed)
    gives the lowest `loss(dropped)` (e.g. calibration NLL). Returns [(layer, loss after removing it)] in
    removal order; its first k entries are the greedy choice for k. Σ (L − k) evaluations for k < n."""
    if not 0 <= n < n_layers:
        raise CompressError(f"cannot remove {n} of {n_layers} layers: at least one must stay")
    dropped: list[int] = []
    trace: list[tuple[int, float]] = []
    for _ in range(n):
        losses = {i: loss(sorted([*dropped, i])) for i in range(n_layers) if i not in dropped}
        best = min(losses, key=losses.get)
        dropped.append(best)
        trace.append((best, losses[best]))
    return trace


def greedy_drop(n_layers: int, n: int, loss: Callable[[list[int]], float]) -> list[int]:
    """greedy_order's layers, sorted."""
    return check_drop([layer for layer, _ in greedy_order(n_layers, n, loss)], n_layers)
