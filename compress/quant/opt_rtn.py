"""auto-round's optimised round-to-nearest ("opt-RTN", what `AutoRound(iters=0)` does to symmetric int weights
below 8 bits) as pure tensor math, so the allocator's costs can come from the rounding the checkpoint gets.

Follows auto-round 0.16.1 `auto_round/data_type/int.py` (`search_scales`, `quant_tensor_opt_rtn_sym`), which
credits llama.cpp's make_qx_quants. Per output row and group of `group_size` input columns:
- full-range symmetric grid: codes L in [−nmax, nmax − 1], nmax = 2^(bits−1); the group's largest-magnitude
  weight g maps to −nmax exactly, so the scale s = −g / nmax takes g's opposite sign (GPTQ's min-max grid
  instead spends the range on ±max and has one level fewer on one side);
- the multiplier of g is searched: nmax − step·k for k in ±search_min (200 steps of 0.75·nmax/100, or 180
  steps of 0.01 at 2 bits), keeping per group the scale with the lowest Σ imatrix ⊙ (s·L − w)²;
- imatrix = mean x² of the unit's input per column (the diagonal of compress's H), as auto-round collects it.
The result stores as GPTQ with zero point nmax and a signed fp16 scale (auto-round's `auto_gptq` export).
Shapes: w (out, in); imatrix (in,); returns (out, in) float32, dequantized.
"""

from __future__ import annotations

import torch

SEARCH_RATIO = 0.75  # auto-round's AR_SEARCH_SCALE_RATIO default
SCALE_FLOOR = 1e-5  # its q_scale_thresh for fp16 scales: |s| is kept above this
CHUNK = 1 << 17  # weights searched at a time: 200 passes over a chunk stay in cache (≈4x faster on 2 cores)


def _reciprocal(x: torch.Tensor) -> torch.Tensor:
    """1 / x, 0 where |x| < 1e-30 (auto_round.utils.common.get_reciprocal for float32)."""
    safe = x.abs() >= 1e-30
    return torch.where(safe, 1.0 / torch.where(safe, x, torch.ones_like(x)), torch.zeros_like(x))


def _steps(bits: int) -> tuple[float, int]:
    """(step, search_min): multipliers nmax − step·k, k = −search_min..search_min, k ≠ 0."""
    nmax = 2 ** (bits - 1)
    if bits == 2:
        return 0.01, 18 * 5
    search_min = nmax * SEARCH_RATIO
    step = search_min / 200 * 2
    return step, int(search_min / step)


def search_scales(groups: torch.Tensor, bits: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per row of `groups` (rows, k) the signed scale (rows, 1) minimising Σ weight ⊙ (s·L − w)² over the
    searched multipliers; weight (rows, k) or None (plain squared error)."""
    nmax = 2 ** (bits - 1)
    peak = torch.take_along_dim(groups, groups.abs().argmax(-1, keepdim=True), -1)  # (rows, 1), signed
    inv_peak = _reciprocal(peak)

    def loss_at(multiplier: float) -> tuple[torch.Tensor, torch.Tensor]:
        inv_scale = -multiplier * inv_peak
        levels = torch.round(inv_scale * groups).clamp_(-nmax, nmax - 1)
        scale = _reciprocal(inv_scale)
        err = (scale * levels - groups).square_()
        return (err if weight is None else err.mul_(weight)).sum(-1), scale

    best, scale = loss_at(float(nmax))
    step, search_min = _steps(bits)
    for k in range(-search_min, search_min + 1):
        if k == 0:
            continue
        loss, candidate = loss_at(nmax - step * k)
        better = loss < best
        scale = torch.where(better.unsqueeze(-1), candidate, scale)
        best = torch.where(better, loss, best)
    return scale


def opt_rtn_weights(w: torch.Tensor, bits: int, group_size: int | None, imatrix: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """w (out, in) rounded by opt-RTN and dequantized, float32. group_size None: per channel (one group per
    row). imatrix (in,): per-column weights of the search (None: unweighted)."""
    w = w.detach().float()
    out_features, in_features = w.shape
    group = group_size or in_features
    if in_features % group:
        raise ValueError(f"group size {group} does not divide the input width {in_features}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be 2..8, got {bits}")
    groups = w.reshape(-1, group)
    weight = None
    if imatrix is not None:
        weight = _fill_zero_columns(imatrix.float(), w).reshape(-1, group)
    rows = max(1, CHUNK // group)  # the search is independent per group: chunks give the same scales
    scale = torch.cat([search_scales(groups[i:i + rows], bits, None if weight is None else weight[i:i + rows])
                       for i in range(0, groups.shape[0], rows)])
    scale = torch.where(scale < 0, scale.clamp(max=-SCALE_FLOOR), scale.clamp(min=SCALE_FLOOR))
    nmax = 2 ** (bits - 1)
    levels = (groups / scale).round_().clamp_(-nmax, nmax - 1)
    return (levels * scale).reshape(out_features, in_features)


def _fill_zero_columns(imatrix: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The imatrix broadcast to w's shape (out, in); columns that never saw activation energy (0) take the
    row's mean of the others, so the search still weighs them (auto-round's _imatrix_handle_zero fills
    such entries with row means when they are few; with none at all the weights are uniform)."""
    full = imatrix.unsqueeze(0).expand_as(w)
    if imatrix.min() > 0:
        return full
    if imatrix.max() <= 0:
        return torch.ones_like(w)
    mean = imatrix[imatrix > 0].mean()
    return torch.where(full > 0, full, mean)
