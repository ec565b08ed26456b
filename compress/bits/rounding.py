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

from collections import Counter
from dataclasses import replace
from typing import Mapping, Sequence

import torch

from compress.bits.unit_costs import allocation_applied, kl_to, linear_modules, round_unit, unit_weight
from compress.model.units import Unit
from compress.plan import Option, Plan
from compress.quant.gptq import ROUNDINGS, GPTQConfig
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


def resolve_rounding(model, settings: GPTQConfig, plan: Plan, allocation: dict | None, calib: torch.Tensor
                     ) -> tuple[GPTQConfig, dict | None]:
    """(settings with `auto` replaced by the rounding chosen on the model, {"rounding", "kl"} of that choice, or
    None when nothing was chosen): the per-unit allocator's choice (unit_plan's stats in `allocation`), else
    choose_rounding at the plan's most common width and the checkpoint's group size, KL on the first 4
    calibration rows, Hessians on the rest. calib (samples, seq_len) token ids."""
    if settings.rounding != "auto":
        return settings, None
    if allocation and "rounding" in allocation:
        choice = {"rounding": allocation["rounding"], "kl": allocation.get("rounding_kl", {})}
    else:
        from compress.bits.unit_costs import log_probs, unit_hessians
        from compress.model.units import model_units
        from compress.quant.gptq import resolve_group_size

        widths = Counter(b for b in plan.reduced().bits if b < 16)
        option = Option(widths.most_common(1)[0][0], resolve_group_size(model, settings), settings.sym)
        held = max(1, min(4, calib.shape[0] // 4))  # as unit_plan holds out its KL rows
        units, rows = model_units(model), calib[:held]
        hessians = unit_hessians(model, units, calib[held:], progress=False)
        rounding, kl = choose_rounding(model, units, hessians, option, rows, log_probs(model, rows))
        choice = {"rounding": rounding, "kl": kl, "option": option.label}
    return replace(settings, rounding=choice["rounding"]), choice
