"""Per-unit bit plans for `compress run --bits mixed`: options per fused unit, chosen by the exact knapsack on
Fisher costs measured at the quantized operating point (issue 15; measured best, eval/results/mixed_units).

1. H_u on calibration rows (compress.bits.unit_costs); every unit rounded at the base option (uniform, the
   widest whose g64 form fits the budget) by GPTQ's solver.
2. Gradients of the LM loss with the model at that base point: the Fisher diagonal F.
3. Every unit x option rounded by the solver; cost(u, o) = ½ Σ F_u ⊙ (W_u − Q_uo)²; the knapsack
   (compress.bits.knapsack) within the byte budget.
4. Optionally re-linearise: gradients at the chosen allocation, re-solve, keep the plan with the lowest KL
   on held-out calibration rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from compress.bits import knapsack
from compress.bits.options import unit_options
from compress.bits.unit_costs import (allocation_applied, fisher_costs, gradients, kl_to, log_probs, model_units,
                                      proxy_costs, rounded_table, unit_hessians)
from compress.errors import CompressError
from compress.plan import LayerDecision, Option, Plan
from compress.quant.storage import unit_bytes


@dataclass(frozen=True)
class UnitPlan:
    plan: Plan
    costs: dict  # {unit key: {option label: Fisher cost}} of the last linearisation
    stats: dict  # decoder bytes, bits per decoder weight, seconds per step, KL per round


def budget_bytes(units, avg_bits: float) -> int:
    """Bytes of the decoder units at `avg_bits` stored bits per decoder weight."""
    return int(avg_bits * sum(u.params for u in units) / 8)


def check_budget(units, options, avg_bits: float) -> None:
    """Refuse, before any work, a budget below the cheapest or above the richest plan the options allow."""
    params = sum(u.params for u in units)
    per_unit = [[unit_bytes(u, o) for o in unit_options(u, options)] for u in units]
    low, high = (8 * sum(f(s) for s in per_unit) / params for f in (min, max))
    if not low <= avg_bits <= high:
        raise CompressError(f"avg_bits (--avg-bits) {avg_bits:g} is outside what the options allow on this model: "
                            f"{low:.3f} to {high:.3f} stored bits per decoder weight")


def check_model_budget(model: str | None, options, avg_bits: float) -> None:
    """check_budget from the model's config alone (a meta-device skeleton: no weights loaded)."""
    from compress.model import named_linears, resolve_model_path
    from compress.model.units import group_units
    from compress.quant.gptq import skeleton

    meta = skeleton(resolve_model_path(model))
    check_budget(group_units((n, i, tuple(m.weight.shape)) for n, i, m in named_linears(meta)), options, avg_bits)


def gradient_point(avg_bits: float, options) -> Option:
    """The uniform option the gradients are taken at: the largest width whose g64 (or nearest) form fits."""
    widths = sorted({o.bits for o in options})
    fitting = [w for w in widths if w + (16 + w) / 64 <= avg_bits + 1e-9] or widths[:1]
    return min((o for o in options if o.bits == fitting[-1] and o.sym),
               key=lambda o: abs((o.group_size or 10**6) - 64))


def unit_plan(model, calib: torch.Tensor, avg_bits: float, options, rounds: int = 0, grad_rows: int = 16,
              kl_rows: int = 4, progress: bool = True) -> UnitPlan:
    """The per-unit plan within `avg_bits` for `model` (float, on CPU); calib (samples, seq_len). rounds 0
    keeps one unit's rounded weights at a time; rounds > 0 keeps every unit x option (fp16: 2 bytes x decoder
    weights x options) to re-take the gradients at each chosen plan."""
    units = model_units(model)
    check_budget(units, options, avg_bits)
    kl_rows = min(kl_rows, calib.shape[0] // 4)
    timing, started = {}, time.perf_counter()
    hessians = unit_hessians(model, units, calib[kl_rows:], progress=progress)
    timing["hessians_s"] = round(time.perf_counter() - started, 1)
    base = gradient_point(avg_bits, options)
    labels = {u.key: unit_options(u, options) for u in units}
    allocation = {u.key: base if base in labels[u.key] else labels[u.key][0] for u in units}
    table = rounded_table(model, units, hessians, options, progress=progress) if rounds else None
    sizes = [[unit_bytes(u, o) for o in labels[u.key]] for u in units]
    budget = budget_bytes(units, avg_bits)
    held_out, reference, best, trace = calib[:kl_rows], None, None, []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        at = table or rounded_table(model, units, hessians, list(dict.fromkeys(allocation.values())),
                                    progress=progress)
        with allocation_applied(model, units, at, allocation):
            grad, fisher = gradients(model, calib[kl_rows:kl_rows + grad_rows], units, progress=progress)
        if table is None:
            costs = fisher_costs(model, units, hessians, options, fisher, progress=progress)
        else:
            costs = proxy_costs(model, units, table, hessians, grad, fisher)["fisher"]
        # 256-byte steps, finer for tiny models so rounding each size up cannot eat the budget
        resolution = max(1, min(256, min(min(row) for row in sizes) // 16))
        solution = knapsack.solve([[costs[u.key][o] for o in labels[u.key]] for u in units], sizes, budget,
                                  resolution)
        allocation = {u.key: labels[u.key][k] for u, k in zip(units, knapsack.pick(solution, budget))}
        if rounds:
            reference = reference if reference is not None else log_probs(model, held_out)
            with allocation_applied(model, units, table, allocation):
                kl = kl_to(model, held_out, reference)
            trace.append(round(kl, 5))
            if best is None or kl < best[0]:
                best = (kl, allocation, costs)
        timing[f"round{r}_s"] = round(time.perf_counter() - t0, 1)
    _, allocation, costs = best if best else (None, allocation, costs)
    total = sum(unit_bytes(u, allocation[u.key]) for u in units)
    stats = {"allocator": "units", "gradient_point": base.label, "rounds": rounds, "kl_trace": trace,
             "decoder_bytes": total, "bits_per_decoder_weight": 8 * total / sum(u.params for u in units),
             "seconds": timing}
    return UnitPlan(to_plan(units, allocation), {k: {o.label: v for o, v in row.items()} for k, row in costs.items()},
                    stats)


def to_plan(units, allocation) -> Plan:
    """A Plan with each layer's units set to their options (bits = the widest, as Plan requires)."""
    by_layer: dict[int, list] = {}
    for unit in units:
        by_layer.setdefault(unit.layer, []).append((unit.name, allocation[unit.key]))
    return Plan(tuple(LayerDecision(i, max(o.bits for _, o in rows), reason="knapsack on Fisher costs",
                                    units=tuple(rows)) for i, rows in sorted(by_layer.items())))
