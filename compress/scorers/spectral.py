"""Spectral heavy-tailedness (HT-SR): power-law exponent α of each weight matrix's eigenvalue spectrum.

Per matrix: eigenvalues λ = σ² of W, the Hill-MLE tail exponent α with xmin by minimum KS distance
(WeightWatcher's default, column `alpha`) and by the median eigenvalue (TempBalance / LLR, `alpha_median`),
α̂ = α·log10 λ_max, spectral norm and stable rank. Per decoder layer: the mean over its matrices.
Direction: a larger α (a weaker heavy tail) marks a less trained, less important layer (AlphaPruning prunes
it more; LLR gives it a larger LR), so `alpha` ranks LOWER = more important.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from compress.model import decoder_layers, named_linears
from compress.scorers.powerlaw import EVALS_THRESH, alpha_hat, eigenvalues, fit_powerlaw, spectral_metrics
from compress.scores import INFO, LOWER, LayerScores

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class SpectralConfig:
    precision: str = "float32"  # dtype of the Gram matrix and its eigensolver (float64: 1.5x slower)
    min_eval: float = EVALS_THRESH  # eigenvalues at or below this are not fitted (KS rule), as in WeightWatcher
    batch: int = 16  # matrices of one shape per eigensolver call
    include_head: bool = True  # also fit Linears outside the decoder layers (lm_head) for the per-matrix table

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch < 1:
            raise ValueError("batch must be >= 1")


def _weight_matrix(module: torch.nn.Module) -> torch.Tensor:
    return module.weight.detach().reshape(module.weight.shape[0], -1)


def _fit_chunk(weights: list[torch.Tensor], config: SpectralConfig) -> list[dict]:
    """Eigenvalues and fits of same-shape matrices; runs in a worker thread with one intra-op thread."""
    evals = eigenvalues(weights, PRECISIONS[config.precision])
    ks = fit_powerlaw(evals, "ks", config.min_eval)
    med = fit_powerlaw(evals, "median")
    metrics = spectral_metrics(evals)
    hat = alpha_hat(ks.alpha, evals)
    return [
        {
            "num_evals": evals.shape[-1],
            "alpha": ks.alpha[b].item(),
            "xmin": ks.xmin[b].item(),
            "D": ks.D[b].item(),
            "num_pl_spikes": int(ks.n_tail[b]),
            "alpha_median": med.alpha[b].item(),
            "alpha_hat": hat[b].item(),
            **{key: value[b].item() for key, value in metrics.items()},
        }
        for b in range(len(weights))
    ]


def fit_in_chunks(weights: list[torch.Tensor], work: Callable[[list[torch.Tensor]], list], batch: int = 16,
                  progress: bool = False, desc: str = "alpha") -> list:
    """work(same-shape matrices) -> one result per matrix, over all `weights`, in their order.

    Matrices of one shape share a batched eigensolver call (chunks of `batch`), largest work first (lm_head's
    Gram matrix dominates) so the workers finish together. LAPACK's symmetric eigensolver barely scales with
    threads at these sizes, so one chunk runs per core, each single-threaded (measured 2x on 2 cores); numpy's
    BLAS and torch's LAPACK release the GIL."""
    by_shape = defaultdict(list)
    for k, w in enumerate(weights):
        by_shape[tuple(w.shape)].append(k)
    chunks = [ks[lo : lo + batch] for ks in by_shape.values() for lo in range(0, len(ks), batch)]
    chunks.sort(key=lambda ks: -sum(weights[k].numel() * min(weights[k].shape) for k in ks))
    results: list = [None] * len(weights)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"), torch.no_grad(), ThreadPoolExecutor(max_workers=threads) as pool, tqdm(
            total=len(weights), desc=desc, unit="matrix", disable=not progress, leave=False
        ) as bar:
            jobs = {pool.submit(work, [weights[k] for k in chunk]): chunk for chunk in chunks}
            for job in as_completed(jobs):
                for k, result in zip(jobs[job], job.result()):
                    results[k] = result
                bar.update(len(jobs[job]))
    finally:
        torch.set_num_threads(threads)
    return results


def median_alphas(weights: list[torch.Tensor]) -> list[float]:
    """α of each matrix with xmin = the median eigenvalue (TempBalance / LLR's estimator)."""
    return fit_in_chunks(weights, lambda ws: fit_powerlaw(eigenvalues(ws), "median").alpha.tolist())


def matrix_table(model: torch.nn.Module, config: SpectralConfig = SpectralConfig(), progress: bool = True):
    """One dict per Linear/Conv1D weight: its name, decoder-layer index (None outside the layers), and fits."""
    entries = [(name, layer, _weight_matrix(m)) for name, layer, m in named_linears(model, config.include_head)]
    fits = fit_in_chunks([w for _, _, w in entries], lambda ws: _fit_chunk(ws, config), config.batch, progress)
    return [{"name": name, "layer": layer, "shape": list(w.shape), **fit} for (name, layer, w), fit in zip(entries, fits)]


def spectral_scores(model: torch.nn.Module, calib=None, config: SpectralConfig = SpectralConfig(),
                    progress: bool = True) -> LayerScores:
    """Per-layer means of the per-matrix fits; the per-matrix rows are kept in `matrices`."""
    rows = matrix_table(model, config, progress)
    n_layers = len(decoder_layers(model))
    columns = {}
    for key in ("alpha", "alpha_median", "alpha_hat", "stable_rank", "log_spectral_norm"):
        per_layer = defaultdict(list)
        for row in rows:
            if row["layer"] is not None:
                per_layer[row["layer"]].append(row[key])
        columns[key] = tuple(sum(v) / len(v) for v in (per_layer[i] for i in range(n_layers)))
    return LayerScores(
        n_layers=n_layers,
        columns=columns,
        directions={"alpha": LOWER, "alpha_median": LOWER, "alpha_hat": INFO, "stable_rank": INFO,
                    "log_spectral_norm": INFO},
        descriptions={
            "alpha": "mean over the layer's matrices of the power-law α of the ESD, xmin by min KS distance",
            "alpha_median": "as alpha, xmin = median eigenvalue (TempBalance / LLR)",
            "alpha_hat": "mean α·log10 λmax (KS α)",
            "stable_rank": "mean Σλ / λmax",
            "log_spectral_norm": "mean log10 λmax",
        },
        matrices=tuple({"scorer": "alpha", **row} for row in rows),
    )
