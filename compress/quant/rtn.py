"""Round-to-nearest group quantization: pure tensor math, no model.

Grid as in GPTQ's Quantizer (IST-DASLab/gptq quant.py, find_params): per output row and group of
`group_size` input columns, min ≤ 0 ≤ max, maxq = 2^bits − 1; symmetric: max = max|w|, min = −max where
w has negatives, zero = (maxq + 1) / 2; asymmetric: zero = round(−min / scale); scale = (max − min) / maxq.
q = clamp(round(w / scale) + zero, 0, maxq).
Shapes: w (out, in); q (out, in) int; scale, zero (out, in // group_size).
"""

from __future__ import annotations

import torch

from compress.quant.storage import group_size_for


def grid_params(w: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero), each (rows, 1), of GPTQ's min-max grid over the columns of w (rows, cols): its
    Quantizer.find_params, which GPTQ's solver (compress.quant.gptq_solve) calls at every group start."""
    maxq = 2**bits - 1
    xmin = w.amin(1, keepdim=True).clamp_max(0)
    xmax = w.amax(1, keepdim=True).clamp_min(0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(empty, -1.0, xmin), torch.where(empty, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale, zero


def codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """w (rows, k) as integer codes (float) on the grid: clamp(round(w / scale) + zero, 0, maxq)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def round_to_grid(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """w (rows, k) rounded onto the grid and dequantized."""
    return scale * (codes(w, scale, zero, bits) - zero)


def quantize(w: torch.Tensor, bits: int, group_size: int, sym: bool = True):
    """-> (q, scale, zero). Computed in float32; q is uint8 (bits <= 8)."""
    out_features, in_features = w.shape
    if in_features % group_size:
        raise ValueError(f"group size {group_size} does not divide the input width {in_features}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    rows = w.float().reshape(-1, group_size)  # one row per (output row, group)
    scale, zero = grid_params(rows, bits, sym)
    q = codes(rows, scale, zero, bits)
    shape = (out_features, in_features // group_size)
    return q.to(torch.uint8).reshape(out_features, in_features), scale.reshape(shape), zero.reshape(shape)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = q.shape
    groups = q.float().reshape(out_features, in_features // group_size, group_size)
    return ((groups - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(out_features, in_features)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, sym: bool = True) -> torch.Tensor:
    """w rounded onto its `bits`-bit grid, back in w's dtype."""
    return dequantize(*quantize(w, bits, group_size, sym), group_size).to(w.dtype)
