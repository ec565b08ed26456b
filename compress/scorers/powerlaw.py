"""Power-law fits of eigenvalue spectra (HT-SR): pure tensor math, no model.

Follows WeightWatcher's WWFit (CalculatedContent/WeightWatcher, WW_powerlaw.py) for the KS rule and
TempBalance / LLR's `net_esd_estimator` for the median rule; see shared/reference/algorithms.md §1.2, §2.1.
Eigenvalues come in as a batch (B, N) sorted ascending; every result is a (B,) tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

# WeightWatcher drops eigenvalues at or below this before fitting (constants.EVALS_THRESH).
EVALS_THRESH = 1e-5
# Elements of the (candidates x eigenvalues) KS grid evaluated at once; bounds memory to ~100 MB in float64.
_GRID_BUDGET = 12_000_000
_CANDIDATE_CHUNK = 64


@dataclass(frozen=True)
class PowerLawFit:
    """One fit per matrix of the batch; every field is a (B,) tensor."""

    alpha: torch.Tensor  # tail exponent of the density p(λ) ∝ λ^-α
    xmin: torch.Tensor  # start of the tail
    D: torch.Tensor  # Kolmogorov–Smirnov distance between the tail and the fitted power law
    sigma: torch.Tensor  # standard error (α - 1) / sqrt(n_tail)
    n_tail: torch.Tensor  # eigenvalues >= xmin ("num_pl_spikes" in WeightWatcher)


def _hill(logs: torch.Tensor, suffix: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hill MLE α = 1 + n / Σ_{j>=i} ln(λ_j / λ_i) for the tails starting at `start` (B, C) -> (α, n)."""
    n_total = logs.shape[-1]
    n = (n_total - start).to(logs.dtype)
    denom = suffix.gather(-1, start) - n * logs.gather(-1, start)
    alpha = 1 + n / denom
    return torch.where(denom > 0, alpha, torch.full_like(alpha, float("inf"))), n


def _ks_distance(logs: torch.Tensor, start: torch.Tensor, alpha: torch.Tensor, grid_dtype: torch.dtype) -> torch.Tensor:
    """KS distance max_j |1 - (λ_j/λ_i)^(1-α) - (j-i)/n| over each tail, for candidates `start` (B, C).

    The (B, C, N) grid is built in `grid_dtype` (float32 is 4x faster than float64; D moves by ~1e-7) and
    updated in place: it is the hot loop of the whole scorer.
    """
    n_total = logs.shape[-1]
    n = (n_total - start).to(grid_dtype).unsqueeze(-1)
    position = (torch.arange(n_total, device=logs.device).view(1, 1, -1) - start.unsqueeze(-1)).to(grid_dtype)
    empirical_cdf = position / n  # (B, C, N); negative outside the tail
    grid = logs.to(grid_dtype).unsqueeze(1) - logs.gather(-1, start).to(grid_dtype).unsqueeze(-1)
    # (1-α)·ln(λ_j/λ_i) <= 0 inside the tail whenever α > 1; the clamp only keeps the masked part finite.
    grid.mul_((1 - alpha).to(grid_dtype).unsqueeze(-1)).clamp_max_(0).exp_()
    grid.neg_().add_(1).sub_(empirical_cdf).abs_().mul_(empirical_cdf >= 0)
    D = grid.amax(dim=-1).to(logs.dtype)
    # WWFit: a candidate with α <= 1 (no normalisable power law) keeps D = 1.
    return torch.where(torch.isfinite(alpha) & (alpha > 1), D, torch.ones_like(D))


def fit_powerlaw(
    evals: torch.Tensor,
    xmin_rule: str = "ks",
    min_eval: float = EVALS_THRESH,
    grid_dtype: torch.dtype = torch.float32,
) -> PowerLawFit:
    """Fit each row of `evals` (B, N), sorted ascending, with xmin chosen by `xmin_rule`.

    "ks": every eigenvalue but the largest is a candidate xmin; keep the one with the smallest KS distance
          (WeightWatcher's default). Eigenvalues <= min_eval are not candidates and not data.
    "median": xmin = the eigenvalue at index N // 2 (TempBalance / LLR, xmin_pos = 2); no filtering.
    α is always computed in float64; grid_dtype is the precision of the KS search only.
    """
    if evals.dim() == 1:
        evals = evals.unsqueeze(0)
    evals = evals.to(torch.float64)
    batch, n_total = evals.shape
    if n_total < 2:
        raise ValueError(f"need at least 2 eigenvalues to fit a power law, got {n_total}")
    logs = evals.clamp_min(torch.finfo(torch.float64).tiny).log()
    suffix = logs.flip(-1).cumsum(-1).flip(-1)  # suffix[i] = Σ_{j>=i} ln λ_j
    if xmin_rule == "median":
        start = torch.full((batch, 1), n_total // 2, dtype=torch.long, device=evals.device)
        alpha, n = _hill(logs, suffix, start)
        D = _ks_distance(logs, start, alpha, torch.float64)
        return _result(evals, start[:, 0], alpha[:, 0], D[:, 0], n[:, 0])
    if xmin_rule != "ks":
        raise ValueError(f"unknown xmin rule {xmin_rule!r}: use 'ks' or 'median'")
    first_valid = (evals <= min_eval).sum(-1)  # (B,) candidates start after the filtered prefix
    best_D = torch.full((batch,), float("inf"), dtype=torch.float64, device=evals.device)
    best = torch.zeros(batch, dtype=torch.long, device=evals.device)
    # Candidates go in chunks; a chunk starting at `lo` only needs eigenvalues from `lo` on (its tails),
    # so the grid is a staircase over the upper triangle: half the work of the full square.
    chunk = min(_CANDIDATE_CHUNK, max(1, _GRID_BUDGET // max(1, batch * n_total)))
    for lo in range(0, n_total - 1, chunk):
        cand = torch.arange(lo, min(lo + chunk, n_total - 1), device=evals.device).expand(batch, -1)
        alpha, _ = _hill(logs, suffix, cand)
        D = _ks_distance(logs[:, lo:], cand - lo, alpha, grid_dtype)
        D = torch.where(cand >= first_valid.unsqueeze(-1), D, torch.full_like(D, float("inf")))
        chunk_D, chunk_idx = D.min(-1)  # first minimum, as numpy's argmin
        better = chunk_D < best_D
        best_D = torch.where(better, chunk_D, best_D)
        best = torch.where(better, cand.gather(-1, chunk_idx.unsqueeze(-1))[:, 0], best)
    start = best.unsqueeze(-1)
    alpha, n = _hill(logs, suffix, start)
    D = _ks_distance(logs, start, alpha, torch.float64)  # report D of the chosen xmin in full precision
    return _result(evals, best, alpha[:, 0], D[:, 0], n[:, 0])


def _result(evals, start, alpha, D, n) -> PowerLawFit:
    xmin = evals.gather(-1, start.unsqueeze(-1))[:, 0]
    return PowerLawFit(alpha=alpha, xmin=xmin, D=D, sigma=(alpha - 1) / n.sqrt(), n_tail=n.long())


def spectral_metrics(evals: torch.Tensor) -> dict[str, torch.Tensor]:
    """Norm metrics of each row of `evals` (B, N) (WeightWatcher's apply_norm_metrics, unnormalised WᵀW)."""
    evals = evals.to(torch.float64)
    lam_max = evals.amax(-1)
    total = evals.sum(-1)
    return {
        "spectral_norm": lam_max,  # λ_max = σ_max²
        "log_spectral_norm": lam_max.log10(),
        "log_norm": total.log10(),  # log10 of the squared Frobenius norm
        "stable_rank": total / lam_max,
    }


def alpha_hat(alpha: torch.Tensor, evals: torch.Tensor) -> torch.Tensor:
    """α̂ = α · log10 λ_max (WeightWatcher's alpha_weighted)."""
    return alpha * evals.to(torch.float64).amax(-1).log10()


def eigenvalues(weights: Sequence[torch.Tensor], precision: torch.dtype = torch.float32) -> torch.Tensor:
    """Squared singular values of same-shape matrices (m, n), ascending, as one (B, min(m, n)) tensor.

    Computed as the eigenvalues of the smaller Gram matrix (WᵀW or WWᵀ) in `precision`: one matmul plus a
    symmetric eigensolver, several times faster on CPU than an SVD of the tall matrix. The Gram matrix is
    formed by numpy, whose `a.T @ a` calls BLAS syrk (half the flops of a general matmul) and releases the
    GIL, so worker threads overlap. In float32 the α of SmolLM2-135M's 211 matrices moves by at most 1e-3
    against float64 (eval/results/alpha_speed.md).
    """
    grams = []
    for weight in weights:  # one at a time: no stacked copy of the (possibly large) weights
        a = weight.detach().to(precision).cpu().numpy()
        grams.append(torch.from_numpy(a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T))
    return torch.linalg.eigvalsh(torch.stack(grams)).clamp_min(0)
