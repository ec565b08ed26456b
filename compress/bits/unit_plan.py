"""Per-unit bit plans for `compress run --bits mixed`: options per fused unit, chosen by the exact knapsack on
Fisher costs measured at the quantized operating point (issue 15; measured best, eval/results/mixed_units).

1. H_u on calibration rows (compress.bits.unit_costs); every unit rounded at the base option (uniform, the
   width whose g64 form is nearest the budget: `gradient_point`) the way the checkpoint will be rounded
   (`rounding`: GPTQ's solver on H_u, or opt-RTN weighted by diag(H_u); eval/results/mixed_units-optrtn).
2. Gradients of the LM loss with the model at that base point: the Fisher diagonal F.
3. Every unit x option rounded the same way; cost(u, o) = ½ Σ F_u ⊙ (W_u − Q_uo)²; the knapsack
   (compress.bits.knapsack) within the byte budget.
4. Optionally re-linearise: gradients at the chosen allocation, re-solve, keep the plan with the lowest KL
   on held-out calibration rows.
5. Check (default): that plan, the richest uniform plans within the budget and a llama.cpp-style mix
   (compress.bits.candidates) each rounded and measured by KL on the held-out rows; the lowest is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from compress.bits import knapsack
from compress.bits.candidates import candidate_plans
from compress.bits.options import unit_options
from compress.bits.rounding import choose_rounding
from compress.bits.unit_costs import (allocation_applied, fisher_costs, gradients, kl_to, linear_modules,
                                      log_probs, proxy_costs, round_unit, rounded_table, unit_hessians, unit_weight)
from compress.errors import CompressError
from compress.model.units import model_units
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
    from compress.model import resolve_model_path
    from compress.quant.gptq import skeleton

    check_budget(model_units(skeleton(resolve_model_path(model))), options, avg_bits)


def gradient_point(avg_bits: float, options) -> Option:
    """The uniform option the gradients are taken at: the width whose g64 form (bits + 16/64 scale bits +
    bits/64 zero bits) lies nearest the budget, at its group size nearest 64 — the quantized point the final
    allocation sits around (3.25 -> 3b-g64, 4.0 -> 4b-g64 on SmolLM2's 3/4/8 options)."""
    widths = sorted({o.bits for o in options})
    width = min(widths, key=lambda w: (abs(w + (16 + w) / 64 - avg_bits), w))
    at_width = [o for o in options if o.bits == width]
    return min([o for o in at_width if o.sym] or at_width, key=lambda o: abs((o.group_size or 10**6) - 64))


def unit_plan(model, calib: torch.Tensor, avg_bits: float, options, rounds: int = 0, grad_rows: int = 16,
              kl_rows: int = 4, progress: bool = True, rounding: str = "gptq", check: bool = True) -> UnitPlan:
    """The per-unit plan within `avg_bits` for `model` (float, on CPU); calib (samples, seq_len). rounds 0
    keeps one unit's rounded weights at a time; rounds > 0 keeps every unit x option (fp16: 2 bytes x decoder
    weights x options) to re-take the gradients at each chosen plan. rounding: how the checkpoint will be
    rounded (gptq | opt-rtn | auto: chosen by `choose_rounding` at the gradient point), so the costs are those
    of the weights it will hold; stats["rounding"] says which. check: measure the knapsack's plan against
    compress.bits.candidates' on the held-out rows and keep the lowest KL (stats["checked"], ["chosen"])."""
    units = model_units(model)
    check_budget(units, options, avg_bits)
    kl_rows = min(kl_rows, calib.shape[0] // 4)
    timing, started = {}, time.perf_counter()
    hessians = unit_hessians(model, units, calib[kl_rows:], progress=progress)
    timing["hessians_s"] = round(time.perf_counter() - started, 1)
    base = gradient_point(avg_bits, options)
    held_out = calib[:kl_rows]
    reference = log_probs(model, held_out) if rounds or check or rounding == "auto" else None
    rounding_kl = {}
    if all(o.fmt == "gguf" for o in options):  # llama.cpp's reference rounding (compress.quant.ggml)
        rounding = "ggml"
    elif rounding == "auto":  # opt-RTN rounds symmetric grids only
        rounding, rounding_kl = (choose_rounding(model, units, hessians, base, held_out, reference)
                                 if all(o.sym for o in options) else ("gptq", {}))
        timing["rounding_choice_s"] = round(time.perf_counter() - started - timing["hessians_s"], 1)
    labels = {u.key: unit_options(u, options) for u in units}
    allocation = {u.key: base if base in labels[u.key] else labels[u.key][0] for u in units}
    table = rounded_table(model, units, hessians, options, progress=progress, rounding=rounding) if rounds else None
    sizes = [[unit_bytes(u, o) for o in labels[u.key]] for u in units]
    budget = budget_bytes(units, avg_bits)
    # 256-byte steps, finer for tiny models so rounding each size up cannot eat the budget
    resolution = max(1, min(256, min(min(row) for row in sizes) // 16))

    def costs_at(current, r):
        t0 = time.perf_counter()
        at = table or rounded_table(model, units, hessians, list(dict.fromkeys(current.values())),
                                    progress=progress, rounding=rounding)
        with allocation_applied(model, units, at, current):
            grad, fisher = gradients(model, calib[kl_rows:kl_rows + grad_rows], units, progress=progress)
        if table is None:
            costs = fisher_costs(model, units, hessians, options, fisher, progress=progress, rounding=rounding)
        else:
            costs = proxy_costs(model, units, table, hessians, grad, fisher)["fisher"]
        timing[f"round{r}_s"] = round(time.perf_counter() - t0, 1)
        return costs

    def choose(costs):
        solution = knapsack.solve([[costs[u.key][o] for o in labels[u.key]] for u in units], sizes, budget,
                                  resolution)
        return {u.key: labels[u.key][k] for u, k in zip(units, knapsack.pick(solution, budget))}

    def kl(current):
        with allocation_applied(model, units, table, current):
            return kl_to(model, held_out, reference)

    allocation, costs, trace = relinearise(allocation, rounds, costs_at, choose, kl if rounds else None)
    chosen, checked = "knapsack", {}
    if check:
        t0 = time.perf_counter()
        plans = candidate_plans(units, options, budget, avg_bits, allocation)
        chosen, checked = measured_choice(model, units, hessians, plans, held_out, reference, rounding, table,
                                          progress)
        allocation = plans[chosen]
        timing["check_s"] = round(time.perf_counter() - t0, 1)
    total = sum(unit_bytes(u, allocation[u.key]) for u in units)
    stats = {"allocator": "units", "rounding": rounding, "rounding_kl": rounding_kl, "gradient_point": base.label,
             "rounds": rounds, "kl_trace": trace, "checked": checked, "chosen": chosen, "decoder_bytes": total,
             "bits_per_decoder_weight": 8 * total / sum(u.params for u in units), "seconds": timing}
    reason = ("knapsack on Fisher costs" if chosen == "knapsack" else chosen) + (
        f", lowest calibration KL of {len(checked)} plans" if check else "")
    return UnitPlan(to_plan(units, allocation, reason),
                    {k: {o.label: v for o, v in row.items()} for k, row in costs.items()}, stats)


def relinearise(allocation: dict, rounds: int, costs_at, choose, kl=None) -> tuple[dict, dict, list]:
    """rounds + 1 times: costs linearised at the current allocation (costs_at(allocation, round)), the knapsack
    on them (choose(costs) -> allocation); with `kl` (allocation -> measured KL on held-out calibration rows)
    the allocation with the lowest KL is kept, since the costs can move away from the truth as well as towards
    it. -> (allocation, its costs, KL per round)."""
    best, trace = None, []
    for r in range(rounds + 1):
        costs = costs_at(allocation, r)
        allocation = choose(costs)
        if kl is not None:
            trace.append(round(kl(allocation), 5))
            if best is None or trace[-1] < best[0]:
                best = (trace[-1], allocation, costs)
    return (allocation, costs, trace) if best is None else (best[1], best[2], trace)


def measured_choice(model, units, hessians, plans: dict, rows: torch.Tensor, reference, rounding: str,
                    table=None, progress: bool = True, damp: float = 0.05) -> tuple[str, dict[str, float]]:
    """(name of the plan in `plans` ({name: {unit key: Option}}) with the lowest KL(float ‖ model) on `rows`
    (samples, seq_len; `reference` the float model's log_probs on them), {name: KL in nats per token}). Each
    unit x option is rounded once (`rounding`, from `table` when given) and shared between plans."""
    from tqdm.auto import tqdm

    mods, rounded, kls = linear_modules(model), {}, {}
    for name, alloc in tqdm(plans.items(), desc="checking plans", unit="plan", disable=not progress, leave=False):
        for u in units:
            if (u.key, alloc[u.key]) not in rounded:
                rounded[u.key, alloc[u.key]] = (table[u.key][alloc[u.key]] if table else round_unit(
                    unit_weight(mods, u), hessians[u.key], alloc[u.key], rounding, damp).half())
        at = {u.key: {alloc[u.key]: rounded[u.key, alloc[u.key]]} for u in units}
        with allocation_applied(model, units, at, alloc):
            kls[name] = round(kl_to(model, rows, reference), 5)
    return min(kls, key=kls.get), kls


def to_plan(units, allocation, reason: str = "knapsack on Fisher costs") -> Plan:
    """A Plan with each layer's units set to their options (bits = the widest, as Plan requires)."""
    by_layer: dict[int, list] = {}
    for unit in units:
        by_layer.setdefault(unit.layer, []).append((unit.name, allocation[unit.key]))
    return Plan(tuple(LayerDecision(i, max(o.bits for _, o in rows), reason=reason,
                                    units=tuple(rows)) for i, rows in sorted(by_layer.items())))
