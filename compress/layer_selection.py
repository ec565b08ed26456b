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
    """How many layers to remove, from exactly one of --drop N, --drop-ratio r (round(r·L)) or --speedup s
    (L − ⌊L/s⌋, as Unified Layer Skipping keeps ⌊L/s⌋ layers). At least one layer must stay."""
    given = [x is not None for x in (drop, drop_ratio, speedup)]
    if sum(given) != 1:
        raise CompressError("give exactly one of --drop N, --drop-ratio r, --speedup s")
    if drop is not None:
        n = drop
    elif drop_ratio is not None:
        if not 0 <= drop_ratio < 1:
            raise CompressError(f"--drop-ratio must be in [0, 1), got {drop_ratio}")
        n = round(drop_ratio * n_layers)
    else:
        if not speedup >= 1:
            raise CompressError(f"--speedup must be >= 1, got {speedup}")
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
        raise CompressError(f"--speedup {speedup} keeps {kept_count} of {n_layers} layers; the first and last "
                            f"must stay, so it can be at most {n_layers / 2:g}")
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


def random_drop(n_layers: int, n: int, seed: int) -> list[int]:
    """The baseline: n layers drawn at random (seeded)."""
    return check_drop(random.Random(seed).sample(range(n_layers), n), n_layers)


def greedy_drop(n_layers: int, n: int, loss: Callable[[list[int]], float]) -> list[int]:
    """Measured: remove one layer at a time, each time the one whose removal (with those already removed)
    gives the lowest `loss(dropped)` (e.g. calibration perplexity). n·L evaluations at most."""
    dropped: list[int] = []
    for _ in range(n):
        candidates = [i for i in range(n_layers) if i not in dropped]
        best = min(candidates, key=lambda i: loss(sorted([*dropped, i])))
        dropped.append(best)
    return check_drop(dropped, n_layers)
