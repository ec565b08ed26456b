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


def unit_options(unit: Unit, options: Sequence[Option]) -> list[Option]:
    """The options a unit's input width can take; refused if none can."""
    usable = [o for o in options if fits(o, unit.in_features)]
    if not usable:
        raise CompressError(f"unit {unit.key} (input width {unit.in_features}) can take none of the options "
                            f"{', '.join(o.label for o in options)}")
    return usable
