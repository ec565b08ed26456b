"""Outlier weights (ZD, LayerwiseQuant): the share of each matrix's weights far from its own mean.

Per matrix: ZD = fraction of weights with |z| > threshold (z from the matrix's own mean and std, default
threshold 1), and max|w| / std. Per decoder layer: the mean ZD over its matrices and the largest max|w|/std.
Direction: LayerwiseQuant (arXiv 2406.17415) keeps layers with a *smaller* ZD at more bits, so `zd` ranks
LOWER = more important. `max_abs_over_std` is a diagnostic (it points at single extreme weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from compress.model import decoder_layers, named_linears
from compress.scores import INFO, LOWER, LayerScores


@dataclass(frozen=True)
class OutlierConfig:
    threshold: float = 1.0  # |z| above this counts as an outlier

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")


def outlier_stats(weight: torch.Tensor, threshold: float = 1.0) -> dict[str, float]:
    """ZD fraction and max|w|/std of one weight tensor (any shape), in float64."""
    w = weight.detach().to(torch.float64).flatten()
    mean, std = w.mean(), w.std()
    z = (w - mean) / std
    return {
        "zd": (z.abs() > threshold).double().mean().item(),
        "max_abs_over_std": (w.abs().max() / std).item(),
    }


def outlier_scores(model: torch.nn.Module, calib=None, config: OutlierConfig = OutlierConfig(),
                   progress: bool = True) -> LayerScores:
    n_layers = len(decoder_layers(model))
    bar = tqdm(named_linears(model), desc="zd", unit="matrix", disable=not progress, leave=False)
    rows = [{"scorer": "zd", "name": name, "layer": layer, **outlier_stats(m.weight, config.threshold)}
            for name, layer, m in bar]
    zd, peak = [], []
    for index in range(n_layers):
        mine = [r for r in rows if r["layer"] == index]
        zd.append(sum(r["zd"] for r in mine) / len(mine))
        peak.append(max(r["max_abs_over_std"] for r in mine))
    return LayerScores(
        n_layers=n_layers,
        columns={"zd": tuple(zd), "max_abs_over_std": tuple(peak)},
        directions={"zd": LOWER, "max_abs_over_std": INFO},
        descriptions={
            "zd": f"mean over the layer's matrices of the fraction of weights with |z| > {config.threshold}",
            "max_abs_over_std": "largest max|w|/std over the layer's matrices",
        },
        matrices=tuple(rows),
    )
