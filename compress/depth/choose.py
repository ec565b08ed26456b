"""Choosing the decoder layers to remove or skip, on a loaded model: the registry of --skip-policy names and
the plumbing (scoring, calibration losses) around the pure rules of compress.depth.select."""

from __future__ import annotations

from dataclasses import dataclass, field

from compress.config import check_settings, setting
from compress.errors import CompressError

# --skip-policy -> what it does (the literal registry; its lookup error lists these names)
SKIP_POLICIES = {
    "bi": "ShortGPT: the n layers of lowest Block Influence on calibration text",
    "angular": "Gromov et al.: the contiguous run of n layers whose input and output are closest in angle",
    "uls": "Unified Layer Skipping: n layers spread evenly, first and last kept (no data needed)",
    "greedy": "measured: one layer at a time, the one whose removal raises calibration NLL least",
    "random": "baseline: n layers drawn at random (seeded)",
}


def check_policy(name: str) -> str:
    if name not in SKIP_POLICIES:
        raise CompressError(f"unknown skip_policy (--skip-policy) {name!r}; valid: {', '.join(SKIP_POLICIES)}")
    return name


@dataclass(frozen=True)
class DepthConfig:
    """Which decoder layers `compress run` removes before it plans bits."""

    skip: float = setting(0.0, "remove this fraction of the decoder layers first (round(skip * L) layers), then "
                          "plan bits on the rest", minimum=0, below=1)
    skip_policy: str = setting("bi", "which layers --skip removes: bi (ShortGPT), angular (Gromov et al. "
                               "contiguous block), uls (evenly spaced), greedy (measured), random")
    skip_layers: tuple[int, ...] = setting((), "remove exactly these layers instead: comma list, e.g. 3,5,7")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.skip and self.skip_layers:
            raise CompressError("give skip (--skip) or skip_layers (--skip-layers), not both")
        check_policy(self.skip_policy)

    @property
    def removes(self) -> bool:
        return bool(self.skip or self.skip_layers)


@dataclass(frozen=True)
class SkipChoice:
    dropped: list[int]  # sorted decoder-layer indices of the model as given
    reasons: dict[int, str]  # layer -> the plan's reason column
    scores: object = None  # LayerScores the choice was made from (bi, angular), else None
    trace: list = field(default_factory=list)  # greedy: [(layer, calibration NLL after removing it)]


def choose_layers(model, policy: str, n: int, calib=None, seed: int = 0, progress: bool = True) -> SkipChoice:
    """The n layers of `model` that `policy` removes. calib: (samples, seq_len) token ids, needed by bi,
    angular and greedy."""
    from compress.depth.select import contiguous_block, least_important, random_drop, uls_drop
    from compress.model import decoder_layers

    check_policy(policy)
    n_layers = len(decoder_layers(model))
    if not 0 <= n < n_layers:
        raise CompressError(f"cannot remove {n} of {n_layers} layers: at least one must stay")
    if n == 0:
        return SkipChoice([], {})
    if policy in ("bi", "angular", "greedy") and calib is None:
        raise CompressError(f"skip_policy {policy} needs calibration tokens")
    if policy == "uls":
        return _same_reason(uls_drop(n_layers, n), f"uls: {n} of {n_layers} spread evenly")
    if policy == "random":
        return _same_reason(random_drop(n_layers, n, seed), f"random (seed {seed})")
    if policy == "greedy":
        return _greedy(model, n_layers, n, calib, progress)
    from compress.scorers import score

    scores = score(model, ["lim"], calib, {"lim": {"max_span": n}}, progress=progress)
    if policy == "bi":
        order = scores.importance_order("bi")
        dropped = least_important(order, n)
        return SkipChoice(dropped, {i: f"bi {scores['bi'][i]:.4f}, rank {order.index(i)}/{n_layers}"
                                    for i in dropped}, scores)
    distance = scores[f"angular_{n}"][: n_layers - n + 1]  # input of l vs input of l + n, l = 0..L-n
    dropped = contiguous_block(distance, n_layers, n)
    return _same_reason(dropped, f"angular: run {dropped[0]}..{dropped[-1]}, distance {min(distance):.4f}",
                        scores)


def _same_reason(dropped: list[int], reason: str, scores=None) -> SkipChoice:
    return SkipChoice(dropped, {i: reason for i in dropped}, scores)


def _greedy(model, n_layers: int, n: int, calib, progress: bool) -> SkipChoice:
    from tqdm.auto import tqdm

    from compress.depth.select import greedy_order
    from compress.evaluation.perplexity import calibration_nll
    from compress.depth.bypass import bypassing

    bar = tqdm(total=sum(n_layers - k for k in range(n)), desc="greedy layer removal", unit="forward",
               disable=not progress, leave=False)

    def loss(dropped: list[int]) -> float:
        with bypassing(model, dropped, mode="always"):
            value = calibration_nll(model, calib)
        bar.update(1)
        return value

    trace = greedy_order(n_layers, n, loss)
    bar.close()
    return SkipChoice(sorted(layer for layer, _ in trace),
                      {layer: f"greedy step {step + 1}/{n}, calibration NLL {value:.4f}"
                       for step, (layer, value) in enumerate(trace)},
                      trace=[(layer, round(value, 6)) for layer, value in trace])
