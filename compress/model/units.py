"""Fused quantization units: what a serving engine runs as one module, so what must share one scheme.

q/k/v (-> vLLM's qkv_proj) and gate/up (-> gate_up_proj) of one decoder layer are one unit each; o_proj and
down_proj are units alone (vLLM `utils/gptq_utils.py` matches `dynamic` against these fused prefixes and
raises if shards disagree). SmolLM2-135M has 4 units a layer, 120 in all. Pure apart from `model_units`,
which reads a model's Linear modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from compress.errors import CompressError

# last name component of a Linear -> its fused unit; anything else is a unit of its own
FUSED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}
FUSED_NAMES = {"qkv": "qkv_proj", "gate_up": "gate_up_proj"}  # vLLM's names of the fused modules


@dataclass(frozen=True)
class Unit:
    """One fused unit: its decoder layer, name (qkv, o, gate_up, down) and the (out, in) shapes it fuses."""

    layer: int
    name: str
    modules: tuple[str, ...]  # full module names, e.g. model.layers.3.self_attn.q_proj
    shapes: tuple[tuple[int, int], ...]  # (out, in) per module; all share `in`

    @property
    def in_features(self) -> int:
        return self.shapes[0][1]

    @property
    def params(self) -> int:
        return sum(o * i for o, i in self.shapes)

    @property
    def key(self) -> str:
        return f"{self.layer}.{self.name}"


def unit_name(module: str) -> str:
    """'model.layers.3.self_attn.k_proj' -> 'qkv'; 'model.layers.3.mlp.down_proj' -> 'down'."""
    last = module.rsplit(".", 1)[-1]
    return FUSED.get(last, last.removesuffix("_proj"))


def group_units(linears: Iterable[tuple[str, int, tuple[int, int]]]) -> list[Unit]:
    """Units from (full module name, layer index, (out, in)), in first-seen order."""
    found: dict[tuple[int, str], list[tuple[str, tuple[int, int]]]] = {}
    for name, layer, shape in linears:
        found.setdefault((layer, unit_name(name)), []).append((name, tuple(shape)))
    units = []
    for (layer, name), members in found.items():
        widths = {s[1] for _, s in members}
        if len(widths) != 1:
            raise CompressError(f"layer {layer} unit {name} fuses modules of different input widths {sorted(widths)}")
        units.append(Unit(layer, name, tuple(m for m, _ in members), tuple(s for _, s in members)))
    return units


def unit_pattern(unit: Unit) -> str:
    """Anchored regex for the unit's modules under their own names and the fused name vLLM gives them:
    ^model\\.layers\\.3\\.self_attn\\.(q_proj|k_proj|v_proj|qkv_proj)$ (GPTQModel and vLLM both re.match)."""
    parents = {m.rsplit(".", 1)[0] for m in unit.modules}
    if len(parents) != 1:
        raise CompressError(f"unit {unit.key} spans modules of different parents {sorted(parents)}")
    leaves = [m.rsplit(".", 1)[1] for m in unit.modules]
    if len(leaves) > 1:
        leaves.append(FUSED_NAMES.get(unit.name, unit.name))
    return "^" + re.escape(parents.pop() + ".") + "(" + "|".join(map(re.escape, leaves)) + ")$"


def model_units(model) -> list[Unit]:
    """A model's (or a meta-device skeleton's) fused units, in layer order: the one place units are built."""
    from compress.model.layers import named_linears

    return group_units((name, layer, tuple(m.weight.shape)) for name, layer, m in named_linears(model))
