"""From a Plan to GPTQModel's quantization config: pure functions, no torch, no gptqmodel import.

GPTQModel's `QuantizeConfig.dynamic` maps a pattern to per-module overrides: "+:PATTERN" (or no prefix)
overrides bits/group_size, "-:PATTERN" leaves the module unquantized; patterns are matched with re.match
against full module names (gptqmodel quantization/config.py, _resolve_dynamic_override). vLLM and SGLang
read the same `dynamic` and match it against their *fused* module names (qkv_proj, gate_up_proj), so the
patterns here address whole decoder layers by their exact index prefix (`^model\\.layers\\.11\\.`) rather
than single projections: q/k/v and gate/up of one layer then always share a width, as vLLM requires.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping, Sequence

from compress.model.units import Unit, unit_pattern
from compress.plan import Option


def default_bits(bits: Sequence[int]) -> int:
    """The checkpoint's base width: the most common quantized width in the plan (ties: the larger), so
    the fewest layers need an override."""
    counts = Counter(b for b in bits if b != 16)
    if not counts:
        raise ValueError("the plan quantizes no layer")
    return max(counts, key=lambda b: (counts[b], b))


def layer_pattern(layers_path: str, index: int) -> str:
    """Anchored regex for every module of decoder layer `index` (and nothing of layer 1 matching 11)."""
    return "^" + re.escape(f"{layers_path}.{index}.")


def dynamic_overrides(bits: Sequence[int], layers_path: str, base_bits: int) -> dict[str, dict]:
    """GPTQModel `dynamic` for per-layer widths: an override for each layer whose width differs from
    `base_bits`, a negative (unquantized) rule for each layer kept at 16 bits."""
    dynamic: dict[str, dict] = {}
    for index, b in enumerate(bits):
        if b == 16:
            dynamic[f"-:{layer_pattern(layers_path, index)}"] = {}
        elif b != base_bits:
            dynamic[f"+:{layer_pattern(layers_path, index)}"] = {"bits": b}
    return dynamic


def resolve_bits(dynamic: dict[str, dict], module_name: str, base_bits: int) -> int:
    """The width a module gets under `dynamic` (16 = unquantized): the first matching rule wins,
    as in GPTQModel and vLLM. Used to check a config before quantizing."""
    for key, override in dynamic.items():
        negative = key.startswith("-:")
        pattern = key[2:] if key.startswith(("+:", "-:")) else key
        if re.match(pattern, module_name):
            return 16 if negative else int(override.get("bits", base_bits))
    return base_bits


def base_option(options: Sequence[Option]) -> Option:
    """The checkpoint's base scheme for a per-unit plan: the most common option (ties: more bits), so the
    fewest units need an override."""
    counts = Counter(options)
    return max(counts, key=lambda o: (counts[o], o.bits, o.group_size or 10**9))


def unit_overrides(options: Mapping[Unit, Option | None], base: Option) -> dict[str, dict]:
    """GPTQModel/vLLM `dynamic` for per-unit options: one rule per unit that differs from `base`, a negative
    rule per unit left unquantized (None). group_size -1 = per channel, as GPTQModel writes it."""
    dynamic: dict[str, dict] = {}
    for unit, option in options.items():
        if option is None:
            dynamic[f"-:{unit_pattern(unit)}"] = {}
        elif option != base:
            dynamic[f"+:{unit_pattern(unit)}"] = {"bits": option.bits, "group_size": option.group_size or -1,
                                                   "sym": option.sym, **column_order(option)}
    return dynamic


def column_order(option: Option) -> dict:
    """GPTQModel 7.6 visits columns group-aware (act_group_aware) by default, which it refuses per channel:
    there act-order (desc_act) instead, one group so g_idx stays trivial (compress.quant.gptq_solve does
    the same)."""
    return {"desc_act": True, "act_group_aware": False} if option.group_size is None else {}
