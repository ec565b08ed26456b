"""GPTQ's solver as a pure function of one weight matrix and its input Hessian: no model, no gptqmodel.

The allocator needs every fused unit rounded at every option (120 units x ~24 options on SmolLM2); GPTQModel
can only do that as one full pass per option (~30 min each on 2 CPU cores), so the costs use this solver and
the final checkpoint is still written by GPTQModel. The math follows GPTQModel 7.6 `quantization/gptq.py`
(`quantize`, the eager column loop) and IST-DASLab/gptq `gptq.py::fasterquant`, with act-order off:
  H += damp·mean(diag H)·I;  U = chol(H⁻¹)ᵀ (upper);  for each column i (blocks of 128):
  group parameters from the not-yet-updated W at each group start (as both sources do),
  q_i = Q(w_i);  e = (w_i − q_i)/U_ii;  w_{i:} −= e·U_{i,i:}.
Shapes: w (out, in); h (in, in) = Σ x xᵀ over calibration rows (any positive scale: GPTQ is scale-free).
"""

from __future__ import annotations

import torch

from compress.quant.rtn import grid_params, round_to_grid


def column_order(diag: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """The order GPTQModel 7.6 visits columns in by default: with groups, act_group_aware (GAR, its
    `quantization/gar.py`): each group's columns by descending H diagonal, groups by their largest diagonal
    (groups stay the original contiguous sets, so g_idx is unchanged); per channel, act-order (desc_act):
    every column by descending H diagonal."""
    if group_size is None:
        return torch.argsort(diag, descending=True, stable=True)
    local = torch.sort(diag.view(-1, group_size), dim=1, descending=True, stable=True)
    groups = torch.argsort(local.values[:, 0], descending=True, stable=True)
    return (local.indices + torch.arange(0, diag.numel(), group_size).unsqueeze(1))[groups].flatten()


def gptq_weights(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None, sym: bool = True,
                 damp: float = 0.05, blocksize: int = 128, ordered: bool = True) -> torch.Tensor:
    """GPTQ-rounded copy of w (out, in), float32, dequantized. group_size None: one group per row
    (per-channel). ordered: visit columns in `column_order` (GPTQModel's default), else left to right. The
    dampening grows ×10 while the Cholesky factorisation fails, as GPTQModel does."""
    w = w.detach().float().clone()
    h = h.detach().float().clone()
    columns = w.shape[1]
    group = group_size or columns
    if columns % group:
        raise ValueError(f"group size {group} does not divide the input width {columns}")
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    if ordered:
        perm = column_order(torch.diag(h), group_size)
        q = _solve(w[:, perm], h[perm][:, perm], bits, group, sym, damp, blocksize)
        return q[:, torch.argsort(perm)]
    return _solve(w, h, bits, group, sym, damp, blocksize)


def _solve(w, h, bits: int, group: int, sym: bool, damp: float, blocksize: int) -> torch.Tensor:
    """GPTQ's column loop on w (out, in) and h in the order given; groups are contiguous runs of `group`."""
    columns = w.shape[1]
    u = _inverse_factor(h, damp)
    q = torch.zeros_like(w)
    scale = zero = None
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        w1, err = w[:, i1:i2].clone(), torch.zeros(w.shape[0], i2 - i1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:  # the group's grid from W as it stood at the block start
                scale, zero = grid_params(w[:, i1 + i:i1 + i + group], bits, sym)
            col = w1[:, i:i + 1]
            qi = round_to_grid(col, scale, zero, bits)
            q[:, i1 + i] = qi[:, 0]
            e = (col[:, 0] - qi[:, 0]) / u1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            err[:, i] = e
        w[:, i2:] -= err @ u[i1:i2, i2:]
    return q


def _inverse_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = damp·mean(diag H), raising damp ×10 on failure."""
    mean = torch.mean(torch.diag(h))
    eye = torch.eye(h.shape[0])
    for _ in range(6):
        try:
            lower = torch.linalg.cholesky(h + damp * mean * eye)
            return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
        except torch.linalg.LinAlgError:
            damp *= 10
    raise ValueError("the Hessian is not positive definite even with 10^5 x dampening")


def output_error(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> float:
    """tr((W − Q) H (W − Q)ᵀ): the squared output error Σ‖(W − Q)x‖² over the rows x behind h."""
    d = (w.float() - q.float())
    return float(((d @ h.float()) * d).sum())
