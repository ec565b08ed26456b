"""Layerwise learning rates from heavy-tailedness: pure math (numbers in, numbers out; no torch).

References (shared/reference/algorithms.md §2.2, §3): TempBalance (`tempbalance.py::get_layer_temps`) and LLR,
"One LR Doesn't Fit All: Heavy-Tail Guided Layerwise Learning Rates for LLMs" (hed-ucas/Layer-wise-Learning-
Rate, `olmo/LRUnbalance.py`, `olmo/train.py`). Each weight matrix m gets a base LR η·mult_m from its power-law
exponent α_m; a larger α (a weaker heavy tail, a less-trained matrix) gets the larger LR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from compress.errors import CompressError


@dataclass(frozen=True)
class LRPolicy:
    """How α becomes an LR multiplier. map: "linear" (TempBalance's tb_linear_map: min–max of α onto
    [r_min, r_max]), "sqrt" (tb_sqrt: n·√α_m / Σ√α), "step" (tb_step: by rank, r_min + (r_max − r_min)·rank/n),
    or "uniform" (every multiplier 1)."""

    map: str = "linear"
    r_min: float = 1.0
    r_max: float = 5.0

    def __post_init__(self) -> None:
        if self.map not in MAPS:
            raise CompressError(f"unknown LR map {self.map!r}; valid: {', '.join(MAPS)}")
        if not 0 < self.r_min <= self.r_max:
            raise CompressError(f"need 0 < r_min <= r_max, got r_min {self.r_min:g}, r_max {self.r_max:g}")


def _linear(alphas: Sequence[float], r_min: float, r_max: float) -> list[float]:
    lo, hi = min(alphas), max(alphas)
    if hi == lo:  # nothing to tell apart: everyone at the bottom (LLR never lowers an LR below η·r_min)
        return [r_min] * len(alphas)
    return [r_min + (a - lo) / (hi - lo) * (r_max - r_min) for a in alphas]


def _sqrt(alphas: Sequence[float], r_min: float, r_max: float) -> list[float]:
    roots = [math.sqrt(a) for a in alphas]
    return [len(alphas) * r / sum(roots) for r in roots]


def _step(alphas: Sequence[float], r_min: float, r_max: float) -> list[float]:
    order = sorted(range(len(alphas)), key=lambda i: alphas[i])
    rank = {index: r for r, index in enumerate(order)}
    return [r_min + (r_max - r_min) * rank[i] / len(alphas) for i in range(len(alphas))]


def _uniform(alphas: Sequence[float], r_min: float, r_max: float) -> list[float]:
    return [1.0] * len(alphas)


MAPS = {"linear": _linear, "sqrt": _sqrt, "step": _step, "uniform": _uniform}


# --lr-policy -> policy: LLR's released setting, TempBalance's, other maps, and the uniform baseline
LR_POLICIES = {
    "llr": LRPolicy("linear", 1.0, 5.0),
    "tempbalance": LRPolicy("linear", 0.5, 1.5),
    "sqrt": LRPolicy("sqrt"),
    "step": LRPolicy("step", 1.0, 5.0),
    "uniform": LRPolicy("uniform"),
}


def lr_policy(name: str, r_min: float | None = None, r_max: float | None = None) -> LRPolicy:
    """The named policy, with its ratios replaced where given (--lr-ratio)."""
    if name not in LR_POLICIES:
        raise CompressError(f"unknown lr_policy (--lr-policy) {name!r}; valid: {', '.join(LR_POLICIES)}")
    base = LR_POLICIES[name]
    return LRPolicy(base.map, base.r_min if r_min is None else r_min, base.r_max if r_max is None else r_max)



def lr_multipliers(alphas: Sequence[float], policy: LRPolicy) -> list[float]:
    """Per-matrix multipliers of η. Check (algorithms.md §2.4): α = [2, 3, 4], [1, 5] -> [1, 3, 5]."""
    if not alphas:
        return []
    bad = [a for a in alphas if not math.isfinite(a)]
    if bad:
        raise ValueError(f"α must be finite, got {bad[:3]}")
    return MAPS[policy.map](alphas, policy.r_min, policy.r_max)


def schedule_factor(step: int, total: int, warmup: int, final: float = 0.1) -> float:
    """s(t) every group's LR is multiplied by: linear warm-up from 0 over `warmup` steps, then cosine decay
    to `final` (LLR's get_cyclical_cosine_schedule_with_min_lr, alpha_f = 0.1) at `total`."""
    if step < warmup:
        return step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def ramped(old: float, new: float, step: int, since: int, length: int) -> float:
    """A base LR moving linearly from `old` to `new` over `length` steps from step `since` (LLR's
    linear_to_target transition after each recomputation, L = 50)."""
    if length <= 0 or step >= since + length:
        return new
    return old + (new - old) * max(0, step - since) / length


def recompute_steps(total: int, every: int = 100, until: float = 0.2) -> list[int]:
    """Steps at which α is recomputed: 0, every, 2·every, ... while step <= until·total (LLR: K = 100 during
    the first 20 % of training)."""
    if every < 1:
        raise CompressError(f"the α recomputation interval must be >= 1, got {every}")
    return [t for t in range(0, total + 1, every) if t <= until * total]
