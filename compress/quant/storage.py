"""Storage arithmetic of group-quantized weights, in one place: the group-size rule and the bits a weight
costs on disk. Pure: no torch, no gptqmodel.

GPTQ / RTN storage per output row and group of `group_size` input columns: `bits`-wide codes, one fp16 scale
and one `bits`-wide zero point (AutoGPTQ/GPTQModel "gptq" packing; compress.quant.unpack reads it back).
"""

from __future__ import annotations

from typing import Iterable

from compress.errors import CompressError

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
