"""The bit settings a target can serve, before any weights load: `--bits mixed`'s options narrowed to the
target's types and group sizes (GGUF types for llama.cpp), and one-line refusals for a width it never loads.
The per-unit widths of the model are checked once the plan exists (compress.serving.targets.plan_refusal)."""

from __future__ import annotations

from dataclasses import replace

from compress.errors import CompressError
from compress.serving.targets import GGUF_DEFAULT_OPTIONS, Target


def restrict_bits(bits, target: Target, desc_act: bool = False):
    """`bits` (a BitsConfig) with its options limited to what `target` takes; refuses what it cannot serve
    (and act-order where the target refuses it: vLLM, compress.serving.targets)."""
    from compress.bits.options import default_options

    where = f"target (--target) {target.name}"
    if desc_act and not target.act_order:
        raise CompressError(f"{where} refuses act-order (desc_act) on grouped weights: drop --desc-act")
    if bits.bits not in ("mixed", "16"):
        width = int(bits.bits)
        if not any(b == width for b, _ in target.types):
            raise CompressError(f"{where} loads no {width}-bit weights ({_widths(target)}): pass --bits "
                                f"{min(b for b, _ in target.types)} or another --target")
        return bits
    if bits.bits == "16" or not bits.per_unit:
        if bits.bits == "mixed" and not target.mixed:
            raise CompressError(f"{where} takes one option for the whole checkpoint: pass --bits N")
        return bits
    options = bits.option_list
    if target.fmt == "gguf" and options == default_options():
        options = GGUF_DEFAULT_OPTIONS
    if not target.mixed:
        raise CompressError(f"{where} takes one option for the whole checkpoint: pass --bits N")
    served = [o for o in options if target.refuses(o, target.width_multiple, target.width_multiple) is None]
    if not served:
        raise CompressError(f"{where} serves none of the options {', '.join(o.label for o in options)}: "
                            f"{target.refuses(options[0], target.width_multiple, target.width_multiple)}")
    avg_bits = bits.avg_bits
    if avg_bits == type(bits)().avg_bits and min(o.bits for o in served) > avg_bits and target.avg_bits:
        avg_bits = target.avg_bits  # the default budget is below all it serves: the target's measured one
    return replace(bits, options=tuple(o.label for o in served), avg_bits=avg_bits)


def _widths(target: Target) -> str:
    return "/".join(str(b) for b in sorted({b for b, _ in target.types})) + "-bit"
