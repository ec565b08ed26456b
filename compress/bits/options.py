"""The options a fused unit (compress.model.units) can be stored at: bits x group size (x symmetric /
asymmetric grid). Their exact bytes: compress.quant.storage.unit_bytes. Pure: no torch.
"""

from __future__ import annotations

from typing import Sequence

from compress.errors import CompressError
from compress.model.units import Unit
from compress.plan import GROUPS, WIDTHS, Option
from compress.quant.storage import fits


def option_grid(widths: Sequence[int] = WIDTHS, groups: Sequence[int | None] = GROUPS,
                asym: bool = False) -> tuple[Option, ...]:
    """Every bits × group size (× symmetric/asymmetric) option."""
    return tuple(Option(b, g, s) for b in widths for g in groups for s in ((True, False) if asym else (True,)))


def default_options() -> tuple[Option, ...]:
    """`--bits mixed`'s options: 3/4/8 bits × g32/g64/g128/per channel, symmetric, less two measured misses:
    2-bit (the Fisher costs underrate it; eval/results/mixed_units) and 4-bit per channel, which GPTQModel 7.6
    runs on CPU with its TorchFused int4 kernel (torch _weight_int4pack_mm: group size 32-256 only), so a
    4b-ch unit of width 576 fails at the first forward (measured on SmolLM2's widths)."""
    return tuple(o for o in option_grid(widths=(3, 4, 8)) if o != Option(4, None))


def unit_options(unit: Unit, options: Sequence[Option]) -> list[Option]:
    """The options a unit's input width can take; refused if none can."""
    usable = [o for o in options if fits(o, unit.in_features)]
    if not usable:
        raise CompressError(f"unit {unit.key} (input width {unit.in_features}) can take none of the options "
                            f"{', '.join(o.label for o in options)}")
    return usable


def nearest_option(unit: Unit, option: Option, options: Sequence[Option] = option_grid(asym=True)) -> Option | None:
    """`option` where the unit's width takes it, else the same bits and grid at the nearest group size the width
    takes (per channel counts as far): g128 on SmolLM2's 576-wide units is g64 there. Per channel instead gave
    3.107 b and twice the calibration KL (eval/results/mixed_units-optrtn/STUDY.md §5). None: no such option."""
    usable = unit_options(unit, options)
    if option in usable:
        return option
    return min((o for o in usable if o.bits == option.bits and o.sym == option.sym),
               key=lambda o: abs((o.group_size or 10**6) - (option.group_size or 10**6)), default=None)
