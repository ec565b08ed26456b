"""GPTQ through GPTQModel (the maintained successor of AutoGPTQ): one pass over the model with the Plan's
per-layer widths as `dynamic` overrides, saved as a standard GPTQ folder (config.json with
quantization_config, safetensors, tokenizer) that GPTQModel, vLLM and SGLang load.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress.config import check_settings, invalid, setting
from compress.errors import CompressError
from compress.model import GPTQ_INSTALL
from compress.plan import Plan
from compress.quant.gptq_config import default_bits, dynamic_overrides
from compress.quant.storage import GROUP_SIZES, checkpoint_group_size, effective_bits

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQModel's settings for the whole checkpoint (the per-layer widths come from the Plan)."""

    group_size: int | None = setting(None, "weights per scale; none: 128 where it divides every input width, "
                                     "else 64 / 32", choices=GROUP_SIZES)
    sym: bool = setting(True, "symmetric grid (vLLM's Marlin kernels serve 4/8-bit symmetric only)")
    desc_act: bool = setting(False, "act-order; off keeps the checkpoint servable by every GPTQ kernel")
    damp_percent: float = setting(0.05, "Hessian dampening, fraction of the mean diagonal (GPTQModel's default)")
    batch_size: int = setting(4, "calibration samples per forward", flag=None, minimum=1)

    def __post_init__(self) -> None:
        check_settings(self)
        if not 0 < self.damp_percent < 1:
            raise invalid(self, "damp_percent", f"must be in (0, 1), got {self.damp_percent}")


def _skeleton(model_path: str):
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


def plan_config(model, plan: Plan, settings: GPTQConfig):
    """(base bits, group size, dynamic, per-layer parameter counts) for `plan` on `model`."""
    from compress.model import decoder_layers, decoder_layers_path, layer_params

    plan.check_layers(len(decoder_layers(model)))
    group_size = resolve_group_size(model, settings)
    base = default_bits(plan.bits)
    return base, group_size, dynamic_overrides(plan.bits, decoder_layers_path(model), base), layer_params(model)


def quantize_config(model_path: str, plan: Plan, settings: GPTQConfig = GPTQConfig()):
    """(GPTQModel QuantizeConfig, plan_config's tuple) for quantizing the model at `model_path` per `plan`."""
    try:
        from gptqmodel import QuantizeConfig
    except ImportError as e:
        raise CompressError(f"GPTQ needs gptqmodel: run `{GPTQ_INSTALL}`") from e
    resolved = plan_config(_skeleton(model_path), plan, settings)
    base, group_size, dynamic, _ = resolved
    config = QuantizeConfig(bits=base, group_size=group_size, sym=settings.sym, desc_act=settings.desc_act,
                            damp_percent=settings.damp_percent, dynamic=dynamic or None, offload_to_disk=False)
    return config, resolved


def quantize_gptq(model_path: str, plan: Plan, calib: torch.Tensor, out: Path,
                  settings: GPTQConfig = GPTQConfig()) -> dict:
    """Quantize the model at `model_path` (a local folder) per `plan` and save it into `out`.

    calib: (samples, seq_len) token ids. Returns stats: wall time, effective bits per weight (codes plus
    fp16 scales and zero points, decoder Linears), size on disk, and GPTQ's per-module loss.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))  # gptqmodel needs it on CPU
    config, (base, group_size, dynamic, params) = quantize_config(model_path, plan, settings)
    from gptqmodel import GPTQModel  # present: quantize_config checked

    samples = [{"input_ids": row.tolist(), "attention_mask": [1] * row.numel()} for row in calib]
    started = time.perf_counter()
    model = GPTQModel.load(model_path, config)
    model.quantize(samples, batch_size=settings.batch_size)
    model.save(str(out))
    del model  # the quantized model is not kept: the caller reloads what was saved
    seconds = time.perf_counter() - started
    quantized = [(p, b) for p, b in zip(params, plan.bits) if b != 16]
    losses = _module_loss(Path(out) / "quant_log.csv")  # GPTQ's ||(W - Q) X||^2-style error per Linear
    return {
        "method": "gptq",
        "base_bits": base,
        "group_size": group_size,
        "sym": settings.sym,
        "desc_act": settings.desc_act,
        "damp_percent": settings.damp_percent,
        "dynamic": dynamic,
        "seconds": round(seconds, 2),
        "effective_bits": sum(p * effective_bits(b, group_size) for p, b in quantized) / sum(p for p, _ in quantized),
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
