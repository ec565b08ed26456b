"""GPTQ through GPTQModel (the maintained successor of AutoGPTQ): one pass over the model with the Plan's
per-layer widths as `dynamic` overrides, saved as a standard GPTQ folder (config.json with
quantization_config, safetensors, tokenizer) that GPTQModel, vLLM and SGLang load.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from compress.config import check_settings, invalid, setting
from compress.errors import CompressError
from compress.model import GPTQ_INSTALL
from compress.model.units import model_units
from compress.plan import Option, Plan
from compress.quant.gptq_config import base_option, column_order, default_bits, dynamic_overrides, unit_overrides
from compress.quant.storage import GROUP_SIZES, checkpoint_group_size, require_fit, unit_bytes

if TYPE_CHECKING:
    import torch

ROUNDINGS = ("gptq", "opt-rtn")  # compress.bits.unit_costs rounds the allocator's table the same two ways
ROUNDING_SETTINGS = ROUNDINGS + ("auto",)  # auto: the one measured closer to float (compress.bits.rounding)


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQModel's settings for the whole checkpoint (the per-layer widths come from the Plan)."""

    group_size: int | None = setting(None, "weights per scale; none: 128 where it divides every input width, "
                                     "else 64 / 32", choices=GROUP_SIZES)
    sym: bool = setting(True, "symmetric grid (vLLM's Marlin kernels serve 4/8-bit symmetric only)")
    desc_act: bool = setting(False, "act-order; off keeps the checkpoint servable by every GPTQ kernel")
    damp_percent: float = setting(0.05, "Hessian dampening, fraction of the mean diagonal (GPTQModel's default)")
    batch_size: int = setting(4, "calibration samples per forward", flag=None, minimum=1)
    rounding: str = setting("auto", "how weights are rounded onto the grid: opt-rtn (auto-round's optimised "
                            "round-to-nearest, iters=0), gptq (GPTQModel's solver), or auto: the one whose uniform "
                            "model has the lower KL on held-out calibration rows (opt-rtn on SmolLM2, gptq on "
                            "Gemma-3); all write the same GPTQ format", choices=ROUNDING_SETTINGS)
    iters: int = setting(0, "with --rounding opt-rtn: auto-round's SignRound steps per block (0: optimised RTN; "
                         "200 is auto-round's default: uniform 3b-g64 on SmolLM2 ppl 39.7 vs 50.9 at 18x the "
                         "time, 1110 vs 62 s on 2 cores); the allocator's costs stay opt-RTN's", minimum=0)

    def __post_init__(self) -> None:
        check_settings(self)
        if not 0 < self.damp_percent < 1:
            raise invalid(self, "damp_percent", f"must be in (0, 1), got {self.damp_percent}")
        if self.iters and self.rounding != "opt-rtn":
            raise invalid(self, "iters", f"tunes auto-round's rounding: pass --rounding opt-rtn with it (got "
                          f"--rounding {self.rounding})")


def skeleton(model_path: str):
    """The model's module tree on the meta device (no weights): names and shapes for the config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def resolve_group_size(model, settings: GPTQConfig) -> int:
    """The one group size of the checkpoint: the setting, else the largest of 128/64/32 dividing every
    quantized Linear's input width; refused if it does not divide them all."""
    from compress.model import in_features, named_linears

    return checkpoint_group_size({in_features(m) for _, _, m in named_linears(model)}, settings.group_size)


@dataclass(frozen=True)
class Resolved:
    """A plan turned into GPTQModel's terms: the base scheme, `dynamic`, and what the stats count."""

    base: Option  # bits / group size (None = per channel) / sym of every module without an override
    dynamic: dict
    options: dict  # {Unit: Option or None (unquantized)} for every fused unit of the model

    @property
    def effective_bits(self) -> float:
        """Stored bits per quantized decoder weight: codes, scales, zeros and g_idx (exact GPTQ bytes)."""
        quantized = [(u, o) for u, o in self.options.items() if o is not None]
        return 8 * sum(unit_bytes(u, o) for u, o in quantized) / sum(u.params for u, _ in quantized)


def plan_config(model, plan: Plan, settings: GPTQConfig) -> Resolved:
    """`plan` on `model` in GPTQModel's terms. A plan of per-layer widths gets one group size and one rule per
    layer that differs; a plan with per-unit options gets one rule per fused unit that differs from the most
    common option."""
    from compress.model import decoder_layers, decoder_layers_path

    plan.check_layers(len(decoder_layers(model)))
    group_size = resolve_group_size(model, settings)
    units = model_units(model)
    options = plan_options(plan, units, Option(4, group_size, settings.sym))
    if all(o is None for o in options.values()):  # nothing quantized (only removal): no rules
        return Resolved(Option(4, group_size, settings.sym), {}, options)
    if not any(d.units for d in plan.layers):
        base = Option(default_bits(plan.bits), group_size, settings.sym)
        return Resolved(base, dynamic_overrides(plan.bits, decoder_layers_path(model), base.bits), options)
    base = base_option([o for o in options.values() if o is not None])
    return Resolved(base, unit_overrides(options, base), options)


def plan_options(plan: Plan, units, default: Option) -> dict:
    """{unit: its option, or None where the layer stays unquantized}; a layer without per-unit options puts
    every unit at its width with `default`'s group size and grid. Refuses units that do not match the model."""
    by_layer: dict[int, list] = {}
    for unit in units:
        by_layer.setdefault(unit.layer, []).append(unit)
    options = {}
    for decision in plan.layers:
        layer_units = by_layer.get(decision.index, [])
        given = dict(decision.units)
        if given and set(given) != {u.name for u in layer_units}:
            raise CompressError(f"plan layer {decision.index} names units {sorted(given)} but the model's layer "
                                f"has {sorted(u.name for u in layer_units)}: it was made for another model")
        for unit in layer_units:
            option = given.get(unit.name) or (None if decision.bits == 16 else replace(default, bits=decision.bits))
            if option is not None:
                require_fit(option, unit, where=f"plan layer {decision.index}: ")
            options[unit] = option
    return options


def quantize_config(model_path: str, plan: Plan, settings: GPTQConfig = GPTQConfig()):
    """(GPTQModel QuantizeConfig, Resolved) for quantizing the model at `model_path` per `plan`."""
    try:
        from gptqmodel import QuantizeConfig
    except ImportError as e:
        raise CompressError(f"GPTQ needs gptqmodel: run `{GPTQ_INSTALL}`") from e
    resolved = plan_config(skeleton(model_path), plan, settings)
    base = resolved.base
    order = column_order(base) or {"desc_act": settings.desc_act}
    config = QuantizeConfig(bits=base.bits, group_size=base.group_size or -1, sym=base.sym,
                            damp_percent=settings.damp_percent, dynamic=resolved.dynamic or None,
                            offload_to_disk=False, **order)
    return config, resolved


def quantize_gptq(model_path: str, plan: Plan, calib: torch.Tensor, out: Path,
                  settings: GPTQConfig = GPTQConfig()) -> dict:
    """Quantize the model at `model_path` (a local folder) per `plan` and save it into `out`.

    calib: (samples, seq_len) token ids. Returns stats: wall time, effective bits per weight (codes plus
    fp16 scales, zero points and g_idx, decoder Linears), size on disk, and GPTQ's per-module loss.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))  # gptqmodel needs it on CPU
    config, resolved = quantize_config(model_path, plan, settings)
    from gptqmodel import GPTQModel  # present: quantize_config checked

    samples = [{"input_ids": row.tolist(), "attention_mask": [1] * row.numel()} for row in calib]
    started = time.perf_counter()
    model = GPTQModel.load(model_path, config)
    model.quantize(samples, batch_size=settings.batch_size)
    model.save(str(out))
    del model  # the quantized model is not kept: the caller reloads what was saved
    seconds = time.perf_counter() - started
    losses = _module_loss(Path(out) / "quant_log.csv")  # GPTQ's ||(W - Q) X||^2-style error per Linear
    base = resolved.base
    return {
        "method": "gptq",
        "base_bits": base.bits,
        "group_size": base.group_size or -1,
        "sym": base.sym,
        "desc_act": settings.desc_act,
        "damp_percent": settings.damp_percent,
        "dynamic": resolved.dynamic,
        "seconds": round(seconds, 2),
        "effective_bits": resolved.effective_bits,
        "size_bytes": sum(f.stat().st_size for f in Path(out).glob("*.safetensors")),
        "module_loss": losses,
        "layer_loss": [sum(r["loss"] for r in losses if r["layer"] == i and isinstance(r["loss"], float))
                       for i in range(len(plan.bits))],
    }


def _module_loss(log: Path) -> list[dict]:
    """GPTQ's per-module reconstruction loss from GPTQModel's quant_log.csv."""
    if not log.is_file():
        return []
    with log.open() as f:
        return [{"layer": int(r["layer"]), "module": r["module"], "loss": _number(r["loss"])} for r in csv.DictReader(f)]


def _number(text: str) -> float | str:
    """GPTQ's loss, or GPTQModel's note when it fell back to round-to-nearest (e.g. "rtn fallback")."""
    try:
        return float(text)
    except ValueError:
        return text
