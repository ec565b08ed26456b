"""`--rounding auto`: of GPTQ and opt-RTN, the rounding whose uniformly quantized model stays closer to the float
one on held-out calibration rows (issue 15).

Which rounding wins is a property of the model more than of the allocation: compress's GPTQ solver against
opt-RTN, uniform options, WikiText-2 test perplexity — opt-RTN lower at 7 of 8 options on SmolLM2-135M, higher
at all 8 on Gemma-3-270M (3b-g64: 50.1 vs 105.9 there, 125.9 vs 64.4 here), and the KL on held-out calibration
rows ranked the two the same way as the test perplexity at 15 of 16 (eval/results/rounding_choice). So: round
every unit at one option both ways, measure KL(float ‖ model) on calibration rows the Hessians did not see, keep
the lower. Costs two roundings of the model and two forwards over the rows.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from compress.bits.unit_costs import allocation_applied, kl_to, linear_modules, round_unit, unit_weight
from compress.model.units import Unit
from compress.plan import Option
from compress.quant.gptq import ROUNDINGS
from compress.quant.storage import fits


def unit_option(unit: Unit, option: Option) -> Option:
    """`option` where the unit's input width takes its group size, else the same bits per channel."""
    return option if fits(option, unit.in_features) else Option(option.bits, None, option.sym)


def choose_rounding(model, units: Sequence[Unit], hessians: Mapping[str, torch.Tensor], option: Option,
                    rows: torch.Tensor, reference, damp: float = 0.05) -> tuple[str, dict[str, float]]:
    """(the rounding with the lower KL, {rounding: KL in nats per token}) with every unit rounded at `option`
    (its per-unit fallback: unit_option); rows (samples, seq_len) held out from the Hessians, `reference` the
    float model's log_probs on them. Asymmetric grids: GPTQ only (opt-RTN rounds symmetric grids)."""
    if not option.sym:
        return "gptq", {}
    mods = linear_modules(model)
    kls = {}
    for rounding in ROUNDINGS:
        table = {u.key: {unit_option(u, option): round_unit(unit_weight(mods, u), hessians[u.key],
                                                            unit_option(u, option), rounding, damp).half()}
                 for u in units}
        with allocation_applied(model, units, table, {u.key: unit_option(u, option) for u in units}):
            kls[rounding] = round(kl_to(model, rows, reference), 5)
    return min(kls, key=kls.get), kls
