"""Per-matrix α from `compress` against WeightWatcher's analyze (a dev dependency, not part of the installed
package): the parity check that tests/test_real_model.py and eval/bench_alpha.py share."""

from __future__ import annotations

import statistics


def weightwatcher_alphas(model) -> dict[str, float]:
    """{module name: α} from weightwatcher's default analyze() over the model's Linear weights.

    Embedding layers are skipped (negative layer ids), so both tools see the same matrices.
    """
    import logging

    import torch
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    skip = [-i for i, m in enumerate(model.modules()) if isinstance(m, torch.nn.Embedding)]
    details = ww.WeightWatcher(model=model).analyze(layers=skip)
    return dict(zip(details["longname"], details["alpha"].astype(float)))


def alpha_parity(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """Median and max |Δα| over the matrices both tools fitted."""
    common = sorted(set(ours) & set(theirs))
    if not common:
        raise ValueError("no matrix names in common")
    diffs = [abs(ours[k] - theirs[k]) for k in common]
    return {"matrices": len(common), "median_abs_diff": statistics.median(diffs), "max_abs_diff": max(diffs)}
