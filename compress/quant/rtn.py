"""Round-to-nearest group quantization: pure tensor math, no model.

Grid as in GPTQ's Quantizer (IST-DASLab/gptq quant.py): per output row and group of `group_size` input
columns, maxq = 2^bits − 1; symmetric: scale = 2·max|w| / maxq, zero = (maxq + 1) / 2; asymmetric:
scale = (max − min) / maxq, zero = round(−min / scale). q = clamp(round(w / scale) + zero, 0, maxq).
Shapes: w (out, in); q (out, in) int; scale, zero (out, in // group_size).
"""

from __future__ import annotations

import torch

from compress.quant.storage import group_size_for


def quantize(w: torch.Tensor, bits: int, group_size: int, sym: bool = True):
    """-> (q, scale, zero). Computed in float32; q is uint8 (bits <= 8)."""
    out_features, in_features = w.shape
    if in_features % group_size:
        raise ValueError(f"group size {group_size} does not divide the input width {in_features}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    maxq = 2**bits - 1
    groups = w.float().reshape(out_features, in_features // group_size, group_size)
    if sym:
        xmax = groups.abs().amax(-1).clamp_min(1e-8)
        scale = 2 * xmax / maxq
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        xmin, xmax = groups.amin(-1).clamp_max(0), groups.amax(-1).clamp_min(0)
        scale = ((xmax - xmin) / maxq).clamp_min(1e-8)
        zero = torch.round(-xmin / scale)
    q = torch.clamp(torch.round(groups / scale.unsqueeze(-1)) + zero.unsqueeze(-1), 0, maxq)
    return q.to(torch.uint8).reshape(out_features, in_features), scale, zero


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = q.shape
    groups = q.float().reshape(out_features, in_features // group_size, group_size)
    return ((groups - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(out_features, in_features)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, sym: bool = True) -> torch.Tensor:
    """w rounded onto its `bits`-bit grid, back in w's dtype."""
    return dequantize(*quantize(w, bits, group_size, sym), group_size).to(w.dtype)
