"""The plans `compress run --bits mixed` measures before it commits to one (issue 15): the knapsack's, the
richest uniform options within the budget and a llama.cpp-style k-quant mix. The one with the lowest KL on
held-out calibration rows is written (compress.bits.unit_plan).

Why: no cost model ranks plans reliably on both models measured. The Fisher knapsack beats uniform opt-RTN by
3–14 % from 3.64 bits per weight up on SmolLM2-135M but loses by 4–8 % between 3.29 and 3.55 bits, and under
GPTQ rounding it loses to uniform at 5 of 6 equal-bytes points on Gemma-3-270M, where the mix below wins
(eval/results/mixed_units*/STUDY.md). Measuring a handful of whole plans is cheap next to the costs. Pure: no
torch.
"""

from __future__ import annotations

from typing import Sequence

from compress.bits.options import nearest_option, unit_options
from compress.model.units import Unit
from compress.plan import Option
from compress.quant.storage import unit_bytes

# llama.cpp's k-quant priorities (src/llama-quant.cpp, llama_tensor_get_type): attn_v and ffn_down first
MIX_RANK = {"down": 0, "qkv": 0, "o": 1, "gate_up": 2}


def plan_bytes(units: Sequence[Unit], alloc: dict) -> int:
    """Exact bytes of the decoder units under `alloc` ({unit key: Option})."""
    return sum(unit_bytes(u, alloc[u.key]) for u in units)


def at_width(unit: Unit, options: Sequence[Option], bits: int) -> Option | None:
    """The unit's option of `bits` width whose group size is nearest 64 (per channel counts as far), or None."""
    same = [o for o in unit_options(unit, options) if o.bits == bits]
    return min(same, key=lambda o: (abs((o.group_size or 10**6) - 64), not o.sym), default=None)


def more_bits_layer(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits(i, n): the first and last eighth of the layers and every third between."""
    return i < n / 8 or i >= 7 * n / 8 or (i - n // 8) % 3 == 2


def llamacpp_mix(units: Sequence[Unit], options: Sequence[Option], budget: int, avg_bits: float) -> dict | None:
    """k-quant priorities transplanted to GPTQ units: every unit at the widest width ≤ avg_bits − 0.3 (g64 where
    it can), then the next width given first to down and qkv of the use_more_bits layers, then down/qkv of the
    rest, then o, then gate_up, while `budget` (bytes) lasts. None when even the low width overshoots."""
    widths = sorted({o.bits for o in options})
    low = max((w for w in widths if w <= avg_bits - 0.3), default=widths[0])
    high = min((w for w in widths if w > low), default=low)
    n = max(u.layer for u in units) + 1
    alloc = {u.key: at_width(u, options, low) or unit_options(u, options)[0] for u in units}
    total = plan_bytes(units, alloc)
    if total > budget:
        return None
    order = sorted(units, key=lambda u: (MIX_RANK.get(u.name, 3) + (0 if more_bits_layer(u.layer, n) else 0.5),
                                         u.layer))
    for unit in order:
        richer = at_width(unit, options, high)
        if richer is None:
            continue
        grown = total - unit_bytes(unit, alloc[unit.key]) + unit_bytes(unit, richer)
        if grown <= budget:
            alloc[unit.key], total = richer, grown
    return alloc


def uniform_plans(units: Sequence[Unit], options: Sequence[Option], budget: int, keep: int = 2) -> dict:
    """{'uniform <label>': alloc} for the `keep` options with the most bytes that every unit can take within
    `budget`. A unit whose width refuses the group size takes compress.bits.options.nearest_option (g128 on
    SmolLM2's 576-wide units is g64 there: 3.305 b in all)."""
    found = []
    for option in options:
        alloc = {u.key: nearest_option(u, option, options) for u in units}
        if None not in alloc.values() and plan_bytes(units, alloc) <= budget:
            found.append((plan_bytes(units, alloc), option.label, alloc))
    return {f"uniform {label}": alloc for _, label, alloc in sorted(found, key=lambda t: t[:2], reverse=True)[:keep]}


def candidate_plans(units: Sequence[Unit], options: Sequence[Option], budget: int, avg_bits: float,
                    knapsack: dict) -> dict:
    """{name: alloc}: the knapsack's plan, the richest uniform plans and the llama.cpp-style mix, all within
    `budget` bytes, duplicates dropped (first name kept)."""
    plans = {"knapsack": knapsack, **uniform_plans(units, options, budget)}
    mix = llamacpp_mix(units, options, budget, avg_bits)
    if mix is not None:
        plans["llama.cpp-style mix"] = mix
    unique: dict = {}
    for name, alloc in plans.items():
        if alloc not in unique.values():
            unique[name] = alloc
    return unique
