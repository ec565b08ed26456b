"""Storage arithmetic of group-quantized weights, in one place: the group-size rule and the bits a weight
costs on disk. Pure: no torch, no gptqmodel.

GPTQ / RTN storage per output row and group of `group_size` input columns: `bits`-wide codes, one fp16 scale
and one `bits`-wide zero point (AutoGPTQ/GPTQModel "gptq" packing; compress.quant.unpack reads it back).
Exactly, per Linear of shape (out, in) (GPTQModel `nn_modules/qlinear/__init__.py` buffers, checked against
saved checkpoints): qweight int32 (in·bits/32, out), qzeros int32 (groups, out·bits/32), scales fp16
(groups, out), g_idx int32 (in,); groups = in / group_size, 1 per channel.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

from compress.errors import CompressError

if TYPE_CHECKING:
    from compress.model.units import Unit
    from compress.plan import Option

SCALE_BITS = 16  # one fp16 scale per group
GROUP_SIZES = (128, 64, 32)  # the group sizes GPTQ kernels serve, largest first


def effective_bits(bits: int, group_size: int | None) -> float:
    """Stored bits per weight: the code plus, per group, an fp16 scale and a `bits`-wide zero point."""
    if bits == 16 or not group_size:
        return float(bits)
    return bits + (SCALE_BITS + bits) / group_size


def common_group_size(in_features: Iterable[int], preferred: int = 128) -> int:
    """The largest of `preferred`, 64, 32 that divides every quantized Linear's input width
    (SmolLM2: widths 576 and 1536 -> 64). One group size for the whole checkpoint keeps vLLM's fused
    modules consistent."""
    widths = set(in_features)
    for size in (preferred, *[g for g in GROUP_SIZES if g < preferred]):
        if all(w % size == 0 for w in widths):
            return size
    raise ValueError(f"no group size in {GROUP_SIZES} divides every input width {sorted(widths)}")


def checkpoint_group_size(in_features: Iterable[int], requested: int | None = None) -> int:
    """The one group size of a checkpoint: `requested`, else the common one; refused if it does not divide
    every input width."""
    widths = set(in_features)
    group_size = requested or common_group_size(widths)
    bad = sorted(w for w in widths if w % group_size)
    if bad:
        raise CompressError(f"group size {group_size} does not divide the input widths {bad}")
    return group_size


def group_size_for(in_features: int, preferred: int = 128) -> int:
    """`preferred` if it divides the input width, else the largest of 64/32 that does, else the whole row
    (SmolLM2's width 576 takes 64; its down_proj input 1536 takes 128)."""
    try:
        return common_group_size([in_features], preferred)
    except ValueError:
        return in_features


def linear_bytes(out_features: int, in_features: int, option: Option) -> int:
    """Exact bytes of one Linear stored per `option`: GPTQ packing (see the module docstring), or a GGUF block
    type: per 32 weights the codes, an fp16 scale and, for the asymmetric _1 types, an fp16 min (ggml-common.h:
    block_q4_0 18 bytes, q4_1 20, q5_0 22, q5_1 24, q8_0 34)."""
    if option.fmt == "gguf":
        return out_features * in_features // 32 * (4 * option.bits + (2 if option.sym else 4))
    groups = 1 if option.group_size is None else in_features // option.group_size
    qweight = 4 * math.ceil(in_features * option.bits / 32) * out_features
    qzeros = 4 * groups * math.ceil(out_features * option.bits / 32)
    return qweight + qzeros + 2 * groups * out_features + 4 * in_features


def fits(option: Option, in_features: int) -> bool:
    """Whether the option's group size divides the unit's input width (GPTQ kernels need it)."""
    return option.group_size is None or in_features % option.group_size == 0


def require_fit(option: Option, unit: Unit, where: str = "") -> None:
    """Refuse, in one line, an option whose group size does not divide the unit's input width."""
    if not fits(option, unit.in_features):
        raise CompressError(f"{where}unit {unit.key}: group size {option.group_size} does not divide its input "
                            f"width {unit.in_features}")


def unit_bytes(unit: Unit, option: Option) -> int:
    """Exact bytes of the unit's modules stored per `option`."""
    require_fit(option, unit)
    return sum(linear_bytes(o, i, option) for o, i in unit.shapes)
